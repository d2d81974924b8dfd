"""What every upload to the Hub needs, in one place: repo-id checks, the token, the offline check,
repo creation, and huggingface_hub's exceptions turned into :class:`~forge_hub.errors.HubError`
with a fix. Model pushes, dataset pushes and Space pushes all go through these.

None of these ever puts the token into a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from forge_hub.errors import HubError

MAX_NAME = 96  # the Hub's limit on a repo name


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a huggingface_hub error, None when there was no response."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def repo_id_problem(repo_id: str) -> str | None:
    """What is wrong with ``repo_id`` as a Hub repo id (huggingface_hub's rules plus the Hub's own: an
    owner, a name of at most 96 characters), or None when nothing is."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return str(exc)
    owner, _, name = repo_id.rpartition("/")
    if not owner:
        return "it names no owner (user or organisation)"
    if len(name) > MAX_NAME:
        return f"the name is longer than {MAX_NAME} characters"
    return None


def check_repo_id(repo_id: str, *, input: str = "repo", example: str = "my-name/smollm2-abliterated") -> None:
    """Raise a :class:`HubError` naming the problem with ``repo_id``; ``input`` names the parameter
    the id came from, for the error's hint."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise HubError(f"invalid Hub repo id {repo_id!r}: {problem}",
                       f"write {{{input}}} as OWNER/NAME with letters, digits, '-', '_' and '.', e.g. {example}",
                       input=input)


def require_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN``, else the cached ``hf auth login``."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token found", "log in with `hf auth login`, or set HF_TOKEN to a write token")
    return token


def check_online() -> None:
    """Refuse to publish while huggingface_hub is in offline mode (a push would only fail later)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubError("cannot push: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to publish (or do a {dry_run})")


def create_repo(api, repo_id: str, *, exist_ok: bool, exists_fix: str, **kwargs):
    """``api.create_repo``; an existing repo without ``exist_ok`` is a HubError with ``exists_fix``."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.create_repo(repo_id, exist_ok=exist_ok, **kwargs)
    except HfHubHTTPError as exc:
        if http_status(exc) == 409:
            raise HubError(f"{repo_id} already exists on the Hub", exists_fix, input="exist_ok") from exc
        raise


@contextlib.contextmanager
def hub_errors(repo_id: str, *, card_fix: str = "check {license} and {base_model}") -> Iterator[None]:
    """huggingface_hub's exceptions as HubError with a fix; none of them carries the token.
    ``card_fix`` is what to do when the Hub rejects the README's YAML."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise HubError("cannot push: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to publish") from exc
    except HfHubHTTPError as exc:
        status = http_status(exc)
        hints = {401: "the token was rejected: log in again with `hf auth login` or set a valid HF_TOKEN",
                 403: f"the token cannot write to {repo_id}: use a write token with access to that namespace",
                 404: f"check the repo id and that the token can see {repo_id}"}
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(f"the Hub refused the push to {repo_id} (HTTP {status}): {first}",
                       hints.get(status, "check the repo id and your access to it, then push again with {exist_ok}")) \
            from exc
    except ValueError as exc:  # upload_folder's own YAML check raises ValueError on a 400
        if "metadata" not in str(exc).lower():
            raise
        raise HubError(f"the Hub rejected the README's metadata: {exc}", card_fix) from exc
    except HubError:
        raise
    except Exception as exc:  # dropped connections come as several httpx and OS error types
        cause = exc.__cause__ or exc
        if _unreachable(exc):
            from huggingface_hub import constants

            raise HubError(f"could not reach the Hub at {constants.ENDPOINT} to push {repo_id}: {cause}",
                           "check the network connection and HF_ENDPOINT, then push again") from exc
        raise HubError(f"the push to {repo_id} was interrupted: {type(cause).__name__}: {cause}",
                       "run the same push again with {exist_ok}: files already on the Hub are not sent again") from exc


def _unreachable(exc: BaseException) -> bool:
    """True when no connection could be made at all (a name that does not resolve, a refused
    connection), as opposed to one that broke off during the upload."""
    import socket

    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, (socket.gaierror, ConnectionRefusedError)) or name in ("ConnectError", "ConnectTimeout"):
            return True
        if "Name or service not known" in str(seen) or "nodename nor servname" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
