"""What the commands (launch.py, flax_cae.evaluate, flax_cae.visualize) share: a bad flag is one
sentence on stderr and exit status 2, never a parser's traceback or its text twice.

Study members: `--config.study.members.NAME.FIELD=VALUE` sets any field of the base config for
one member, also one the member's overrides do not list yet (ml_collections only overrides
keys that exist). launch.py takes those flags out of the command line before absl parses it
(`take_member_flags`) and applies them to the loaded config (`apply_member_flags`), parsed by
the type of the field they set.
"""

import ast
import difflib
import re
import sys

import ml_collections

from flax_cae.runtime.errors import ConfigError

MEMBER_PREFIX = '--config.study.members.'


def fail(message: str):
  sys.stderr.write(f'flax-cae: error: {message}\n')
  sys.exit(2)


def _brackets(text: str) -> str | None:
  """What is wrong with the brackets of a tuple typed on the command line, if anything."""
  pairs, stack = {')': '(', ']': '['}, []
  for ch in text:
    if ch in '([':
      stack.append(ch)
    elif ch in ')]':
      if not stack or stack.pop() != pairs[ch]:
        return f'a "{ch}" that closes nothing'
  return f'an unclosed "{stack[-1]}"' if stack else None


def explain_value(flag: str, text: str, like) -> str:
  """One sentence: `text` given to `flag` is not a value of `like`'s type."""
  given = f'{flag}={text}'
  example = f'{flag}={_show(like)}' if like is not None else ''
  if isinstance(like, bool):
    return f'{given} is not true or false; give {flag}=true or {flag}=false.'
  if isinstance(like, int):
    return f'{given} is not an integer; give a whole number, e.g. {example}.'
  if isinstance(like, float):
    return f'{given} is not a number; give one such as {example} (or 1e-3).'
  if isinstance(like, (tuple, list)):
    problem = _brackets(text)
    what = f'has {problem}' if problem else 'is not a tuple of values'
    example = _show(tuple(like)) if like else '(16, 32, 64)'
    return f'{given} {what}; give a tuple in quotes, e.g. {flag}="{example}" ("()" for none).'
  return f'{given} is not a valid value; e.g. {example}.'


def _show(value) -> str:
  return repr(value) if isinstance(value, str) else str(value)


_FLAG_ERROR = re.compile(r'flag (--[\w.]+)=(.*?): (.*)', re.S)


def explain_flag_error(error: Exception, lookup=lambda name: None) -> str:
  """absl's 'flag --config.batch_size=abc: invalid literal for int() ...' as one sentence;
  `lookup(name)` gives the field's current value (its type and an example), if known."""
  text = ' '.join(str(error).split())
  found = _FLAG_ERROR.match(text)
  if not found:
    return text
  flag, value, reason = found.groups()
  if 'must have a value other than None' in reason:
    return f'{flag} is required; e.g. {flag}=workdirs/NAME.'
  like = lookup(flag)
  if like is None:  # the parser's reason says which type it wanted
    like = (0 if 'for int()' in reason else 0.0 if 'to float' in reason
            else True if 'boolean' in reason else () if 'as tuple' in reason else None)
  if like is None:
    return f'{flag}={value} is not accepted ({reason.rstrip(".")}).'
  return explain_value(flag, value, like)


def config_lookup(config):
  """lookup(flag) for explain_flag_error: the value of a --config.* field in `config`."""
  def lookup(flag):
    if config is None or not flag.startswith('--config.'):
      return None
    node = config
    for part in flag[len('--config.'):].split('.'):
      try:
        node = node[part]
      except (KeyError, TypeError, AttributeError):
        return None
    return node
  return lookup


def parse_value(flag: str, text: str, like):
  """`text` read as a value of `like`'s type (the field it sets); one sentence if it is not."""
  try:
    if isinstance(like, bool):
      low = text.strip().lower()
      if low not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise ValueError
      return low in ('true', '1', 'yes')
    if isinstance(like, int):
      return int(text)
    if isinstance(like, float):
      return float(text)
    if isinstance(like, str):
      return text
    if isinstance(like, (tuple, list)):
      value = ast.literal_eval(text) if text.strip() else ()
      return tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    raise ConfigError(explain_value(flag, text, like)) from None


def take_member_flags(argv: list[str]) -> list[tuple[str, str, str]]:
  """Removes every --config.study.members.NAME.FIELD[=VALUE] from `argv` (in place) and returns
  them as (flag, 'NAME.FIELD', VALUE), in order."""
  taken, i = [], 1
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(MEMBER_PREFIX):
      flag, eq, value = arg.partition('=')
      if not eq and i + 1 < len(argv):  # --flag value
        value = argv.pop(i + 1)
      taken.append((flag, flag[len(MEMBER_PREFIX):], value))
      argv.pop(i)
    else:
      i += 1
  return taken


def apply_member_flags(config, taken):
  """Sets each taken member flag in config.study.members, creating the member's override of
  any field of the base config; an unknown member or field, or a value of the wrong type, is
  one sentence naming the flag."""
  if not taken:
    return
  if 'study' not in config:
    raise ConfigError(f'{taken[0][0]} sets a study member, but this config is not a study; '
                      'use it with a config from configs/studies/.')
  members = config.study.members
  base = {k: config[k] for k in config.keys() if k != 'study'}
  with config.unlocked():
    for flag, path, text in taken:
      name, _, field = path.partition('.')
      if name not in members:
        raise ConfigError(f'{flag}: there is no study member {name!r}; valid study member names '
                          f'are: {", ".join(sorted(members.keys()))}.')
      parts = field.split('.') if field else []
      like = base  # the base config's value of the field: its type reads the flag's value
      for part in parts:
        is_tree = isinstance(like, (dict, ml_collections.ConfigDict))
        like = like[part] if is_tree and part in like else _MISSING
        if like is _MISSING:
          break
      if not parts or like is _MISSING or isinstance(like, (dict, ml_collections.ConfigDict)):
        close = difflib.get_close_matches(field, _leaves(base), n=1)
        raise ConfigError(f'{flag}: {field!r} is not a field of the config'
                          f'{f" (did you mean {close[0]!r}?)" if close else ""}; a member may set '
                          'any field the base config has, e.g. --config.study.members.'
                          f'{name}.model.latent_dim=32.')
      node = members[name]
      for part in parts[:-1]:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
          node[part] = ml_collections.ConfigDict()
        node = node[part]
      current = node.get(parts[-1], like)
      node[parts[-1]] = parse_value(flag, text, like if current is None else current)


_MISSING = object()


def _leaves(tree, prefix='') -> list[str]:
  out = []
  for k, v in tree.items():
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out += _leaves(v, f'{prefix}{k}.')
    else:
      out.append(f'{prefix}{k}')
  return out


def parse_flags(argv, flag_values=None):
  """absl's parser for the tools' own flags, with errors as one sentence, status 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flag_values or flags.FLAGS
  def default(flag):
    name = flag.lstrip('-')
    return flag_values[name].default if name in flag_values else None

  try:
    return flag_values(argv)
  except flags.Error as e:
    fail(explain_flag_error(e, default))


def update_config(config, overrides, where: str):
  """Applies a partial config tree; an unknown field is one sentence naming it."""
  for key, value in overrides.items():
    if key not in config:
      raise ConfigError(f'{where}: {key!r} is not a config field; check the spelling '
                        f'(fields here: {", ".join(sorted(config.keys()))}).')
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      update_config(config[key], value, f'{where}.{key}')
    else:
      config[key] = value
