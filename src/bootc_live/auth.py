"""Registry credentials on the host: where podman, skopeo and docker keep them, in their order.

The files are read by the runtime's own parser (`registry.read_auth_file`, `credentials_in`):
one format, one parser, at boot and here. The first file with something for the registry
decides: a credential helper it names (`credHelpers`, then `credsStore` for entries it has
no `auth` for) or its `auths` entry.
"""

from __future__ import annotations

import json
import os
import shutil

from .runtime.registry import (
    DOCKER_HUB,
    RegistryError,
    credentials_in,
    read_auth_file,
    registry_keys,
)
from .runtime.run import CommandError, run

HELPER_TIMEOUT = 30.0
RUN_CONTAINERS = "/run/containers"  # podman's per-user runtime directory without XDG_RUNTIME_DIR


def auth_files() -> list[str]:
    """The auth files podman, skopeo and docker read, in their order (existing or not).

    $REGISTRY_AUTH_FILE is podman's and skopeo's default --authfile: the one file then, as
    with --authfile. $DOCKER_CONFIG is docker's directory instead of ~/.docker.
    """
    env = os.environ
    if env.get("REGISTRY_AUTH_FILE"):
        return [env["REGISTRY_AUTH_FILE"]]
    home = os.path.expanduser("~")
    places = []
    if env.get("XDG_RUNTIME_DIR"):
        places.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers/auth.json"))
    places.append(os.path.join(RUN_CONTAINERS, str(os.getuid()), "auth.json"))
    config = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    places.append(os.path.join(config, "containers/auth.json"))
    docker = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    places.append(os.path.join(docker, "config.json"))
    return places


class Lookup:
    """(host, repository) → (user, password): the `credentials` of a RegistrySource."""

    def __init__(self, auth_file: str | None) -> None:
        self.explicit = auth_file
        self.places = [auth_file] if auth_file else auth_files()

    def __call__(self, host: str, repository: str) -> tuple[str, str] | None:
        for path in self.places:
            if path != self.explicit and not os.path.isfile(path):
                continue
            obj = read_auth_file(path)
            helpers = obj.get("credHelpers")
            helper = next(
                (
                    helpers[k]
                    for k in registry_keys(host)
                    if isinstance(helpers, dict) and isinstance(helpers.get(k), str)
                ),
                None,
            )
            # A helper named for the registry is its answer (as containers/image asks).
            found = (
                _from_helper(helper, host, path)
                if helper
                else credentials_in(obj, path, host, repository)
            )
            store = obj.get("credsStore")
            if found is None and isinstance(store, str) and store:
                found = _from_helper(store, host, path)
            if found is not None:
                return found
        return None

    def where(self) -> str:
        """The places looked, for a hint."""
        return ", ".join(self.places)


def _from_helper(name: str, host: str, path: str) -> tuple[str, str] | None:
    """Ask `docker-credential-NAME get` for the registry's credentials (None: it has none)."""
    program = f"docker-credential-{name}"
    if shutil.which(program) is None:
        raise RegistryError(
            f"{path} names the credential helper {name!r}, but {program} is not installed",
            f"install {program}, or remove it from {path}",
        )
    server = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
    try:
        answer = run(
            [program, "get"], capture=True, input=server + "\n", timeout=HELPER_TIMEOUT
        ).stdout
    except CommandError as err:
        if "not found" in err.detail.lower() or "not found" in err.output.lower():
            return None
        raise RegistryError(
            f"credential helper {program} failed for {host}: {err.detail}",
            f"check it with: echo {server} | {program} get",
        ) from None
    try:
        obj = json.loads(answer)
        user, secret = obj["Username"], obj["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(
            f"credential helper {program} answered something that is not its JSON for {host}"
        ) from None
    if not isinstance(user, str) or not isinstance(secret, str) or user == "<token>":
        raise RegistryError(
            f"credential helper {program} gave an identity token for {host}, which bootc-live "
            "cannot use",
            "log in with a user and password (podman login)",
        )
    return user, secret
