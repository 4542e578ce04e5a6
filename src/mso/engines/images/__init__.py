"""Images for the container engines (Swarm, Kubernetes), built offline and cached by tag.

Public API (the Kubernetes engine uses it too):

- `ensure_base_image() -> tag`: the offline base image (the host's Python + shim);
- `ensure_gateway_image() -> tag`: mso's proxy on the base image;
- `build_service_image(loaded, service) -> tag`: what a service runs (`image:` as is,
  `build:` built, or the app's folder on the base image for `run:` services);
- `uses_shim(loaded, service)`: whether the service's command should be wrapped in
  `python3 /opt/mso/shim.py run --ports P,.. -- ARGV` (see `shim.py`);
- `ImageError`: any failure, with a one-line reason;
- `base_image_tag()`, `gateway_image_tag(base, wheels)`, `app_image_tag(loaded, base)`,
  `build_image_tag(loaded, service)`, `cached_gateway_wheels()`: the same tags computed
  without Docker (`mso render --engine kubernetes` names images it does not build).

Every function takes an optional `docker.DockerClient`; without one it connects with
`docker.from_env(version="auto")`.
"""

from __future__ import annotations

from mso.engines.images.builder import (ImageError, app_image, app_image_tag, base_image_tag,
                                        build_image_tag, build_service_image,
                                        cached_gateway_wheels, ensure_base_image,
                                        ensure_gateway_image, gateway_image_tag, uses_shim)
from mso.engines.images.rootfs import SHIM_PATH

__all__ = ["SHIM_PATH", "ImageError", "app_image", "app_image_tag", "base_image_tag",
           "build_image_tag", "build_service_image", "cached_gateway_wheels",
           "ensure_base_image", "ensure_gateway_image", "gateway_image_tag", "uses_shim"]
