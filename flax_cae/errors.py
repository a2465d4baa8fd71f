"""Errors that reach the user as one sentence: what is wrong and how to fix it."""


class UserError(Exception):
  """Base class: bad input from the user (config, data, workdir), never a bug."""


class ConfigError(UserError, ValueError):
  """A config value is wrong (unknown name, out of range, incompatible)."""


class DataError(UserError):
  """A data set is missing, cannot be downloaded, or holds an unreadable file."""


class DivergedError(UserError):
  """The loss became NaN or Inf; the run stopped without saving the broken state."""


def unknown_name(kind: str, name: str, valid) -> ConfigError:
  """The registries' shared error: lists the valid names so a typo is easy to fix."""
  return ConfigError(
      f"Unknown {kind} {name!r}; valid {kind} names are: {', '.join(sorted(valid))}.")
