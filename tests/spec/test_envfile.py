"""env_file (dotenv) parsing."""

from __future__ import annotations

import pytest

from mso.spec.envfile import parse_env_file
from mso.spec.errors import ManifestError

TEXT = r"""
# a comment
PLAIN=value
SPACED = spaced value   # trailing comment
export EXPORTED=yes
SINGLE='no $INTERP # here'
DOUBLE="line1\nline2 \"q\" \$LIT ${HOME_DIR}"
EMPTY=
HASH=a#b
REF=${PLAIN}-2
DEFAULTED=${NOPE:-fallback}
"""


def test_env_file_forms() -> None:
    assert parse_env_file(TEXT, ".env", {"HOME_DIR": "/home/u"}) == {
        "PLAIN": "value",
        "SPACED": "spaced value",
        "EXPORTED": "yes",
        "SINGLE": "no $INTERP # here",
        "DOUBLE": 'line1\nline2 "q" $LIT /home/u',
        "EMPTY": "",
        "HASH": "a#b",
        "REF": "value-2",
        "DEFAULTED": "fallback",
    }


def test_earlier_keys_shadow_the_environment() -> None:
    assert parse_env_file("A=file\nB=${A}\n", ".env", {"A": "env"})["B"] == "file"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("A=1\nnot a pair\n", 2, "expected KEY=VALUE"),
        ("A='open\n", 1, "unterminated single quote"),
        ('A="open\n', 1, "unterminated double quote"),
        ("A=1\nB=${MISSING}\n", 2, "variable MISSING is not set"),
        ("A='x' junk\n", 1, "unexpected text after the closing quote"),
        ("1A=x\n", 1, "expected KEY=VALUE"),
    ],
)
def test_env_file_errors_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_env_file(text, "conf/.env", {})
    assert info.value.file == "conf/.env" and info.value.line == line
    assert fragment in info.value.message


def test_env_file_errors_do_not_echo_values() -> None:
    with pytest.raises(ManifestError) as info:
        parse_env_file("TOKEN='sekrit' trailing-sekrit\n", ".env", {})
    assert "sekrit" not in str(info.value)
