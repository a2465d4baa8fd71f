"""Errors that reach the user as one sentence: what is wrong and how to fix it."""

import errno
import os
import re


class UserError(Exception):
  """Base class: bad input from the user (config, data, workdir), never a bug."""


class ConfigError(UserError, ValueError):
  """A config value is wrong (unknown name, out of range, incompatible)."""


class DataError(UserError):
  """A data set is missing, cannot be downloaded, or holds an unreadable file."""


class StorageError(UserError):
  """A file could not be written (disk full, quota, a file-size limit, permissions)."""


class DivergedError(UserError):
  """The loss became NaN or Inf; the run stopped without saving the broken state."""


def unknown_name(kind: str, name: str, valid) -> ConfigError:
  """The registries' shared error: lists the valid names so a typo is easy to fix."""
  return ConfigError(
      f"Unknown {kind} {name!r}; valid {kind} names are: {', '.join(sorted(valid))}.")


# What a full disk, a quota, a file-size limit or a read-only folder raise when writing.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                          errno.EPERM})


def write_failure(error: BaseException) -> str | None:
  """The reason a write failed ('No space left on device'), found in `error`, its causes
  (orbax wraps them) or tensorstore's message text; None when `error` is not one."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
      return error.strerror or str(error)
    found = re.search(r"os_error_code='?(\d+)", str(error))  # tensorstore's OUT_OF_RANGE etc.
    if found and int(found.group(1)) in WRITE_ERRNOS:
      return os.strerror(int(found.group(1)))
    error = error.__cause__ or error.__context__
  return None
