"""A fast streaming reader of (gzip/bzip2/xz-compressed) tar archives.

CINIC-10's and LFW's tarballs are read with it, member by member, without
extracting anything to disk.
"""

import gzip
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _open_compressed(path: Path):
  """Opens a possibly gzip/bzip2/xz-compressed file for buffered sequential reading."""
  with open(path, 'rb') as f:
    magic = f.read(6)
  if magic[:2] == b'\x1f\x8b':
    return gzip.open(path, 'rb')
  if magic[:3] == b'BZh':
    import bz2  # pylint: disable=g-import-not-at-top
    return bz2.open(path, 'rb')
  if magic == b'\xfd7zXZ\x00':
    import lzma  # pylint: disable=g-import-not-at-top
    return lzma.open(path, 'rb')
  return open(path, 'rb', buffering=1 << 20)


def _tar_number(field: bytes) -> int:
  if field[0] & 0x80:  # GNU base-256, for sizes of 8 GiB and more
    return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], 'big')
  return int(field.split(b'\0', 1)[0].strip() or b'0', 8)


def iter_tar_files(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
  """Streams the regular files of a (compressed) tar archive: (name, read()) pairs.

  A minimal reader of the ustar, GNU (long names) and pax (path/size records)
  formats. It exists for speed: Python's tarfile spends ~60 us parsing each
  header, a third of the time of preparing CINIC-10's 270k PNGs from its
  tarball; this takes a few us. read() returns the member's bytes and only works
  until the iteration moves on; members nobody reads are skipped.

  Raises:
    tarfile.TarError: a corrupt header.
  """
  with _open_compressed(path) as f:
    long_name = None
    pax: dict[str, str] = {}
    while True:
      header = f.read(512)
      if len(header) < 512 or header == bytes(512):
        return  # end-of-archive marker (or a truncated archive without one)
      checksum = _tar_number(header[148:156])
      if checksum != sum(header[:148]) + 256 + sum(header[156:]):
        raise tarfile.TarError(f'bad tar header checksum at byte {f.tell() - 512}')
      kind = header[156:157]
      size = int(pax.get('size', _tar_number(header[124:136])))
      padded = (size + 511) // 512 * 512
      if kind in (b'L', b'K', b'x', b'g'):  # metadata for the next member (or, 'g', all)
        data = f.read(padded)[:size]
        if kind == b'L':
          long_name = data.split(b'\0', 1)[0].decode('utf-8', 'surrogateescape')
        elif kind == b'x':
          pax = _parse_pax(data)
        continue
      name = header[:100].split(b'\0', 1)[0]
      if header[257:263] == b'ustar\x00' and header[345] != 0:  # POSIX name prefix
        name = header[345:500].split(b'\0', 1)[0] + b'/' + name
      name = pax.get('path') or long_name or name.decode('utf-8', 'surrogateescape')
      long_name, pax = None, {}
      if kind in (b'0', b'\0', b'7'):  # regular files
        consumed = False

        def read(size=size, padded=padded):
          nonlocal consumed
          consumed = True
          return f.read(padded)[:size]

        yield name, read
        if not consumed:
          f.read(padded)
      elif padded:  # links, folders, devices: skip whatever data they carry
        f.read(padded)


def _parse_pax(data: bytes) -> dict[str, str]:
  """Parses pax extended-header records ('<length> <key>=<value>' lines) into a dict."""
  records, pos = {}, 0
  while pos < len(data):
    space = data.index(b' ', pos)
    length = int(data[pos:space])
    key, _, value = data[space + 1:pos + length - 1].partition(b'=')
    records[key.decode()] = value.decode('utf-8', 'surrogateescape')
    pos += length
  return records
