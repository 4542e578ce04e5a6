"""The web dashboard (`mso dashboard`; docs/dashboard.md).

`server` serves it on 127.0.0.1 (from the daemon's process on the embedded engine;
`__main__` in a process of its own for Swarm and Kubernetes apps), `app` has its routes
(pages, Server-Sent Events, POST actions), `auth` its login, session and CSRF tokens,
`data` what the pages show, and `source` where it comes from: the daemon, read with the
API's own views, or (`remote`) a Swarm or Kubernetes engine, read as the CLI reads it. Pages are rendered
on the server (Jinja2); the browser gets a small script and uPlot (vendored from npm
with its licence under static/vendor/), so users have no build step.
"""
