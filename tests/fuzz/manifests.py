"""Manifest fuzzing: Hypothesis strategies for `mso.yaml` files, and the oracle.

Two sources of cases, both as bytes of a file:

* `from_schema(json_schema())`: documents drawn from the JSON Schema mso publishes
  (`mso schema`), rendered as YAML in block or flow style. The schema is compiled to
  strategies here, once: hypothesis-jsonschema 0.23.1 (its latest release) calls
  `many().more()`, which Hypothesis 6.170 no longer has, and re-canonicalises the schema
  on every draw (about 10 cases/s for ours); pydantic's schemas use a small subset of
  JSON Schema (`$ref`, `anyOf`, `enum`, `type`, `properties`, `required`,
  `additionalProperties`, `patternProperties`, `items`, `minItems`, `minimum`,
  `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `pattern`), all handled below.
  Strings are drawn from values a manifest plausibly holds (names, durations, sizes,
  paths, `${VAR}`) as well as from arbitrary text, so cases reach past the first check.
* `mutated_examples()`: the example manifests (examples/, docs/, README.md and the
  spec tests' example) with mutations of their tree (delete, replace with a value of
  another type, duplicate, huge numbers, odd unicode, deep nesting) and of their text
  (truncation, tabs, duplicated lines, anchors/aliases/tags, directives, documents,
  CRLF, BOM, NUL and non-UTF-8 bytes, very deep flow nesting).

`check(path)` is the oracle: what `mso validate` does (load, engine support checks,
command warnings) plus what `mso up` computes from a loaded manifest must either succeed
or raise `ManifestError`, every problem naming the file and a line; anything else, and
the loader's catch-all ("cannot load manifest: ...", which exists only to hide a bug
from users), is a failure.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
Json = Any

# --- the schema, compiled to strategies --------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
PLAUSIBLE = [
    "web", "db", "api", "shop", "http", "tcp", "grpc", "1s", "250ms", "1m30s", "0s", "-1s",
    "10x", "256Mi", "1Gi", "512m", "500m", "0.5", "/", "/healthz", "/api", "./app.py",
    "../etc/passwd", "/abs/path", "python3", "sh -c 'exit 1'", "127.0.0.1", "0.0.0.0",
    "localhost:8080", "SIGTERM", "term", "SIGKILL", "KILL", "${X}", "${X:-d}", "${UNSET}",
    "${UNSET:?needed}", "${X:+alt}", "$$", "${", "${X", "$${X}", "started", "healthy",
    "completed", "always", "never", "on-failure", "rolling", "canary", "blue_green",
    "recreate", "round_robin", "least_request", "local", "swarm", "kubernetes",
    "", " ", "x-y", "MSO_PORT", "a" * 300, "ünïcödé", "日本", "\u202e", "😀", "\x00",
    "\ud800", "\t", "\n", "a\nb", "yes", "no", "on", "off", "null", "~", "0x10", "1e3",
    ".inf", "2024-01-01", "- x", "a: b", "*a", "&a", "!tag", "#", "%",
]
TEXT = st.one_of(st.sampled_from(PLAUSIBLE), NAMES, st.text(max_size=20))
HUGE_INTS = [0, -1, 1, 2**31, 2**31 - 1, 2**53 + 1, 2**63, -(2**63) - 1, 10**30, 10**400]
FLOATS = [0.0, -0.0, 0.5, 1e-300, 1e308, math.inf, -math.inf, math.nan]


def _json_values(depth: int = 2) -> st.SearchStrategy[Json]:
    leaves = st.one_of(st.none(), st.booleans(), st.sampled_from(HUGE_INTS),
                       st.integers(-10, 70000), st.sampled_from(FLOATS), TEXT)
    if depth <= 0:
        return leaves
    inner = _json_values(depth - 1)
    return st.one_of(leaves, st.lists(inner, max_size=3),
                     st.dictionaries(st.one_of(NAMES, TEXT), inner, max_size=3))


ANY_JSON = _json_values()


class SchemaCompiler:
    """Turns a pydantic-generated JSON Schema into Hypothesis strategies."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.refs: dict[str, st.SearchStrategy[Json]] = {}

    def compile(self, s: Any) -> st.SearchStrategy[Json]:
        if s is True or s == {}:
            return ANY_JSON
        if s is False:
            return st.nothing()
        if "$ref" in s:
            name = s["$ref"].rsplit("/", 1)[1]
            if name not in self.refs:
                # deferred: a definition may refer to itself (or be compiled later)
                self.refs[name] = st.deferred(lambda: self.compile(self.defs[name]))
            return self.refs[name]
        if "const" in s:
            return st.just(s["const"])
        if "enum" in s:
            return st.sampled_from(s["enum"])
        if "anyOf" in s or "oneOf" in s:
            return st.one_of([self.compile(sub) for sub in s.get("anyOf", s.get("oneOf"))])
        types = s.get("type")
        if isinstance(types, list):
            return st.one_of([self.compile({**s, "type": t}) for t in types])
        if types == "object" or "properties" in s:
            return self._object(s)
        if types == "array":
            return st.lists(self.compile(s.get("items", {})), min_size=s.get("minItems", 0),
                            max_size=max(s.get("minItems", 0), s.get("maxItems", 4)))
        if types == "string":
            if "pattern" in s:
                return st.one_of(st.from_regex(s["pattern"], fullmatch=True), TEXT)
            return TEXT
        if types == "integer":
            return self._number(s, st.integers)
        if types == "number":
            return st.one_of(self._number(s, st.integers), self._number(s, st.floats))
        if types == "boolean":
            return st.booleans()
        if types == "null":
            return st.none()
        return ANY_JSON

    def _number(self, s: dict[str, Any], kind: Callable[..., st.SearchStrategy[Any]]
                ) -> st.SearchStrategy[Any]:
        lo = s.get("minimum", s.get("exclusiveMinimum"))
        hi = s.get("maximum", s.get("exclusiveMaximum"))
        lo = lo if lo is not None else -5
        hi = hi if hi is not None else max(lo, 0) + 70000
        if kind is st.floats:
            inside = st.floats(lo, hi, allow_nan=False)
        else:
            inside = st.integers(math.ceil(lo), math.floor(hi)) if math.ceil(lo) <= math.floor(hi) \
                else st.integers()
        # mostly inside the bounds, sometimes on or past them (huge, negative)
        return st.one_of(inside, inside, inside, st.sampled_from(
            [lo, hi, *HUGE_INTS] if kind is st.integers else [lo, hi, *FLOATS]))

    def _object(self, s: dict[str, Any]) -> st.SearchStrategy[Json]:
        props = {k: self.compile(v) for k, v in s.get("properties", {}).items()}
        required = [k for k in s.get("required", []) if k in props]
        fixed = st.fixed_dictionaries(
            {k: props[k] for k in required},
            optional={k: v for k, v in props.items() if k not in required})
        extra = s.get("additionalProperties", True)
        if extra is False:
            extras: st.SearchStrategy[dict[str, Json]] = st.just({})
            if "^x-" in s.get("patternProperties", {}):
                extras = st.dictionaries(NAMES.map(lambda n: "x-" + n), ANY_JSON, max_size=1)
        else:
            extras = st.dictionaries(st.one_of(NAMES, NAMES, TEXT), self.compile(extra),
                                     max_size=3)
        return st.tuples(extras, fixed).map(lambda p: {**p[0], **p[1]})


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Json]:
    return SchemaCompiler(schema).compile(schema)


# --- YAML rendering -------------------------------------------------------------------


def to_yaml(doc: Json, flow: bool = False, unicode: bool = True) -> bytes:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode,
                          sort_keys=False, width=60)
    # A lone surrogate cannot be UTF-8: written as it would be by a broken editor.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def schema_documents(draw: st.DrawFn, schema: dict[str, Any]) -> bytes:
    doc = draw(from_schema(schema))
    return to_yaml(doc, flow=draw(st.booleans()), unicode=draw(st.booleans()))


# --- seeds and mutations ----------------------------------------------------------------


def seeds() -> list[str]:
    """The example manifests: examples/**/mso.yaml, the spec tests' example, and every
    ```yaml block of the docs and README.md that is a whole manifest (has `app:`)."""
    found = [p.read_text() for p in sorted((ROOT / "examples").glob("*/mso.yaml"))]
    found.append((ROOT / "tests/spec/data/example.yaml").read_text())
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```yaml\n(.*?)```", md.read_text(), re.S):
            if re.search(r"^app:", block, re.M):
                found.append(block)
    return found


SEEDS = seeds()
PARSED = [yaml.safe_load(s) for s in SEEDS]


def _paths(tree: Json, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


def _get(tree: Json, path: tuple[Any, ...]) -> Json:
    for p in path:
        tree = tree[p]
    return tree


def _nested(depth: int, kind: str) -> Json:
    value: Json = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


TREE_MUTATIONS = ["delete", "replace", "duplicate", "huge", "unicode", "nest", "rename", "empty"]


@st.composite
def mutate_tree(draw: st.DrawFn, tree: Json) -> Json:
    """One mutation of a parsed manifest, at a random node (the tree is copied)."""
    tree = json.loads(json.dumps(tree))
    paths = _paths(tree)[1:]
    if not paths:
        return draw(ANY_JSON)
    path = draw(st.sampled_from(paths))
    parent, key = _get(tree, path[:-1]), path[-1]
    op = draw(st.sampled_from(TREE_MUTATIONS))
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = draw(ANY_JSON)
    elif op == "duplicate" and isinstance(parent, dict):
        other = draw(st.sampled_from(paths))
        parent[draw(st.one_of(NAMES, st.just(key)))] = json.loads(json.dumps(_get(tree, other)))
    elif op == "duplicate":
        parent.insert(key, json.loads(json.dumps(parent[key])))
    elif op == "huge":
        parent[key] = draw(st.sampled_from([*HUGE_INTS, *FLOATS, "9" * 5000, "1" + "0" * 40 + "s"]))
    elif op == "unicode":
        parent[key] = draw(st.one_of(st.text(min_size=1), st.sampled_from(PLAUSIBLE[-30:])))
    elif op == "nest":
        parent[key] = _nested(draw(st.sampled_from([20, 200])), draw(st.sampled_from(["list", "map"])))
    elif op == "rename" and isinstance(parent, dict):
        value = parent.pop(key)
        parent[draw(st.one_of(NAMES, TEXT, st.just(str(key).upper()), st.just(f"{key}s")))] = value
    elif op == "empty":
        parent[key] = draw(st.sampled_from([None, "", [], {}, 0, False]))
    return tree


def _insert_line(lines: list[str], at: int, text: str) -> list[str]:
    return [*lines[:at], text, *lines[at:]]


TEXT_MUTATIONS = ["truncate", "tab", "dup_line", "drop_line", "swap_indent", "anchor",
                  "tag", "directive", "documents", "crlf", "bom", "nul", "bad_bytes",
                  "deep_flow", "long_line", "splice", "merge_key", "alias_bomb", "control"]
TAGS = ["!!python/object:os.system", "!!python/name:os.system", "!!binary", "!!set",
        "!!omap", "!!timestamp", "!!float", "!!int", "!!str", "!!map", "!!seq", "!custom",
        "!", "!!null", "!!bool", "!<tag:yaml.org,2002:str>", "!!merge"]


@st.composite
def mutate_text(draw: st.DrawFn, text: bytes) -> bytes:
    """One mutation of a manifest's bytes, YAML-aware where it helps."""
    op = draw(st.sampled_from(TEXT_MUTATIONS))
    lines = text.decode("utf-8", "surrogateescape").split("\n")
    at = draw(st.integers(0, max(0, len(lines) - 1)))
    line = lines[at] if lines else ""
    indent = line[: len(line) - len(line.lstrip())]
    if op == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if op == "tab":
        lines[at] = draw(st.sampled_from(["\t" + line.lstrip(), line.replace(": ", ":\t", 1),
                                          indent + "\t" + line.lstrip(), line + "\t"]))
    elif op == "dup_line":  # usually a duplicate key
        lines = _insert_line(lines, at, line)
    elif op == "drop_line":
        del lines[at]
    elif op == "swap_indent":
        lines[at] = " " * draw(st.integers(0, 9)) + line.lstrip()
    elif op == "anchor":
        k = draw(st.integers(0, max(0, len(lines) - 1)))
        if ": " in line:
            lines[at] = line.replace(": ", ": &a ", 1)
        lines[k] = re.sub(r": (.+)$", ": *a", lines[k]) if ": " in lines[k] else lines[k] + " *a"
    elif op == "tag":
        tag = draw(st.sampled_from(TAGS))
        lines[at] = line.replace(": ", f": {tag} ", 1) if ": " in line else f"{indent}{tag} {line.lstrip()}"
    elif op == "directive":
        lines = [draw(st.sampled_from(["%YAML 1.1", "%YAML 1.2", "%YAML 2.0", "%TAG ! tag:x,2000:",
                                       "%FOO bar"])), "---", *lines]
    elif op == "documents":
        lines = _insert_line(lines, at, draw(st.sampled_from(["---", "...", "--- |", "--- !!map"])))
    elif op == "crlf":
        return text.replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r", b"\x85", "\u2028".encode()])))
    elif op == "bom":
        pos = draw(st.sampled_from([0, len(text) // 2]))
        return text[:pos] + draw(st.sampled_from(["\ufeff".encode(), b"\xff\xfe", b"\xfe\xff"])) + text[pos:]
    elif op == "nul":
        pos = draw(st.integers(0, len(text)))
        return text[:pos] + b"\x00" + text[pos:]
    elif op == "bad_bytes":
        pos = draw(st.integers(0, len(text)))
        return text[:pos] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf4\x90\x80\x80"])) + text[pos:]
    elif op == "deep_flow":
        depth = draw(st.sampled_from([100, 1000, 10000, 100000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        value = opener * depth + "x" + closer * depth
        lines[at] = re.sub(r": .*$", ": " + value, line) if ": " in line else f"{indent}k: {value}"
    elif op == "long_line":
        lines[at] = line + " " + "y" * draw(st.sampled_from([1000, 100000]))
    elif op == "splice":
        other = draw(st.sampled_from(SEEDS)).split("\n")
        k = draw(st.integers(0, len(other) - 1))
        lines = lines[:at] + other[k:k + draw(st.integers(1, 10))] + lines[at:]
    elif op == "merge_key":
        lines = _insert_line(lines, at, indent + draw(st.sampled_from(
            ["<<: *a", "<<: [*a, *a]", "<<: 1", "<<: [1, 2]", "<<: {}", "<<: {a: 1}", "<<:"])))
        lines = ["x-base: &a {replicas: 2}", *lines]
    elif op == "alias_bomb":
        bomb = ["x-a: &a [l, l, l, l, l, l, l, l, l]"]
        for i in range(1, 9):
            bomb.append(f"x-{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
        lines = bomb + lines
    elif op == "control":
        pos = draw(st.integers(0, len(line)))
        lines[at] = line[:pos] + draw(st.sampled_from(["\x07", "\x1b[31m", "\x7f", "\u0085", "\ufffe", "\U0010ffff"])) + line[pos:]
    return "\n".join(lines).encode("utf-8", "surrogateescape")


@st.composite
def mutated_examples(draw: st.DrawFn) -> bytes:
    """An example manifest with 0-3 tree mutations, then 0-2 text mutations."""
    i = draw(st.integers(0, len(SEEDS) - 1))
    if draw(st.integers(0, 9)) == 0:  # the seed's own text, comments and all
        data = SEEDS[i].encode()
    else:
        tree = PARSED[i]
        for _ in range(draw(st.integers(0, 3))):
            tree = draw(mutate_tree(tree))
        data = to_yaml(tree, flow=draw(st.integers(0, 4)) == 0)
    for _ in range(draw(st.integers(0, 2))):
        data = draw(mutate_text(data))
    return data


def manifests() -> st.SearchStrategy[bytes]:
    from mso.spec.schema import json_schema
    return st.one_of(schema_documents(json_schema()), mutated_examples())


# --- the oracle -------------------------------------------------------------------------

ENVIRON = {"GREETING": "hi", "VAR": "v", "X": "1", "PATH": "/usr/bin:/bin"}
#: Problems about the file as a whole, which no line could name.
NO_LINE_OK = ("the file is empty", "file not found")


@dataclass
class Outcome:
    valid: bool
    errors: int = 0


class FuzzFailure(AssertionError):
    """mso answered a case with something other than success or a located error."""


def workdir(base: Path) -> Path:
    """A copy of the example shop (its secrets, configs and code), so that the files the
    examples name exist and valid cases get as far as `mso up`'s own computations."""
    target = base / "shop"
    if not target.exists():
        shutil.copytree(ROOT / "examples/shop", target)
        # what the spec tests' example (tests/spec/data) and docs/manifest.md refer to
        (target / "web").mkdir(exist_ok=True)
        (target / ".env").write_text("A=1\n")
        for name in ("db_password", "api_key"):
            (target / "secrets" / name).write_text("s3cret\n")
    return target


def check(path: Path) -> Outcome:
    """Load `path` as `mso validate` and `mso up` would; raise FuzzFailure unless that is a
    success or a ManifestError whose every problem names `path` and a line."""
    from mso.spec import support
    from mso.spec.errors import ManifestError
    from mso.spec.load import load_manifest

    stage = "load_manifest"
    try:
        loaded = load_manifest(path, ENVIRON, check_files=True)
        for engine in ("local", "swarm", "kubernetes"):
            stage = f"support.check({engine})"
            try:
                support.check(loaded, engine)
            except ManifestError as exc:
                _check_error(path, exc, stage)
            stage = "command_warnings"
            for warning in loaded.command_warnings(path_env=ENVIRON["PATH"],
                                                   containers=engine != "local"):
                _check_error(path, warning, stage)
        names = [*loaded.manifest.services, *loaded.manifest.jobs]
        for name in names:
            stage = f"service_env/secrets/configs/spec_hash({name})"
            loaded.service_env(name)
            if name in loaded.manifest.services:
                loaded.secret_env(name)
                loaded.configs(name)
                loaded.spec_hash(name)
        return Outcome(valid=True)
    except ManifestError as exc:
        _check_error(path, exc, stage)
        return Outcome(valid=False, errors=len(exc.errors))
    except Exception as exc:
        raise FuzzFailure(f"{stage}: uncaught {type(exc).__name__}: {exc}") from exc


def _check_error(path: Path, exc: Any, stage: str) -> None:
    text = str(exc)
    if "cannot load manifest" in text:
        raise FuzzFailure(f"{stage}: the loader's catch-all fired (a bug): {text}")
    for e in exc.errors:
        if e.file != str(path):
            raise FuzzFailure(f"{stage}: error names {e.file!r}, not the manifest: {e}")
        if e.line is None and not e.message.startswith(NO_LINE_OK):
            raise FuzzFailure(f"{stage}: error without a line: {e}")
        if "Traceback" in e.message:
            raise FuzzFailure(f"{stage}: traceback in message: {e}")
    if not text.startswith(str(path)):
        raise FuzzFailure(f"{stage}: message does not start with the file: {text[:200]}")


def cli_problem(code: int, stderr: str, path: Path) -> str | None:
    """What is wrong with `mso validate PATH`'s answer, or None: it exits 0 (valid) or 2
    (usage error) with `mso: PATH:LINE: ...` lines, never a traceback or internal error."""
    if "Traceback" in stderr or "internal error" in stderr:
        return f"exit {code}: {stderr[-500:]}"
    if code == 0:
        return None
    if code != 2:
        return f"exit {code} (expected 0 or 2): {stderr[-300:]}"
    first = stderr.splitlines()[0] if stderr else ""
    if not first.startswith(f"mso: {path}"):
        return f"first line does not name the file: {first[:200]!r}"
    if not re.match(rf"mso: {re.escape(str(path))}:\d+: ", first) and \
            not any(m in first for m in NO_LINE_OK):
        return f"first line has no line number: {first[:200]!r}"
    return None
