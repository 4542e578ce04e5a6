"""The web dashboard of the local engine (`mso dashboard`; docs/dashboard.md).

`server` serves it from the daemon's process on 127.0.0.1, `app` has its routes (pages,
Server-Sent Events, POST actions), `auth` its login, session and CSRF tokens, and `data`
what the pages show, read from the daemon with the API's own views. Pages are rendered
on the server (Jinja2); the browser gets a small script and uPlot (vendored from npm
with its licence under static/vendor/), so users have no build step.
"""
