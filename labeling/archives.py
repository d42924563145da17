"""A .zip of NIfTI files, opened safely: its directory checked whole before one member is read.

Pure (the standard library and :mod:`mriannot.refusals`): no Django. The archive is read from
a seekable file (Django spools a large upload to a temporary file), never unpacked to disk:
a member's name is only ever shown and used as a file name, so no path in the archive can
reach the file system. Still, an archive that *would* be unsafe to unpack is refused as a
whole, before anything is stored (:class:`ArchiveError`):

- not a zip, or a damaged directory: ``not_a_zip``;
- more than ``max_members`` entries: ``too_many_members``;
- an absolute path, a drive letter, a ``..`` component, a backslash or a symbolic link:
  ``unsafe_path``;
- an encrypted member: ``encrypted``;
- a member that declares more than ``max_member_bytes``, members that declare more than
  ``max_total_bytes`` together, or a member that inflates more than :data:`MAX_RATIO` times
  its compressed size (a zip bomb): ``too_large`` / ``zip_bomb``.

Reading a member never takes more than its declared size of memory: Python's zipfile stops
at the declared size and checks the CRC at the end, so a member that lies about its size is
refused as damaged, one member at a time (:meth:`Archive.read`). One member is held at a time.

Members that are not NIfTI (``.nii``, ``.nii.gz``) are listed as skipped, with why; macOS
metadata (``__MACOSX/``, ``._name``) and folders are left out silently.

>>> import io, zipfile
>>> buffer = io.BytesIO()
>>> with zipfile.ZipFile(buffer, "w") as z:
...     z.writestr("a/sub-01.nii.gz", b"x" * 10)
...     z.writestr("notes.txt", b"hello")
>>> archive = open_archive(buffer, max_members=10, max_member_bytes=100, max_total_bytes=1000)
>>> [(m.name, m.filename) for m in archive.members], archive.skipped
([('a/sub-01.nii.gz', 'sub-01.nii.gz')], [('notes.txt', 'not_nifti', 'not a NIfTI file (.nii or .nii.gz)')])
>>> archive.read(archive.members[0])
b'xxxxxxxxxx'
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from mriannot.refusals import InputRefused

#: The largest ratio of declared to compressed size of a member (a gzipped NIfTI is ~1; a
#: deflated .nii of a brain 3-20).
MAX_RATIO = 200
#: Members small enough to be exempt from the ratio test (a header, a tiny file).
RATIO_EXEMPT_BYTES = 1024 * 1024
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(InputRefused):
    """The archive as a whole is refused; nothing of it was stored."""


@dataclass(frozen=True)
class Member:
    """A NIfTI member: ``name`` as in the archive, ``filename`` its last component."""

    name: str
    filename: str
    size: int
    info: zipfile.ZipInfo = field(repr=False, compare=False)


@dataclass
class Archive:
    """An opened, checked archive: the NIfTI ``members`` and what was ``skipped`` (name, code, why)."""

    zip: zipfile.ZipFile
    members: list[Member]
    skipped: list[tuple[str, str, str]]

    def read(self, member: Member) -> bytes:
        """The member's bytes (at most its declared size), or :class:`InputRefused` (``damaged``)."""
        try:
            with self.zip.open(member.info) as handle:
                return handle.read(member.size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as error:
            raise InputRefused("damaged", f"{member.name}: this member of the zip cannot be read ({error}).") from None


def _unsafe(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or _DRIVE.match(name) or "\x00" in name:
        return True
    return any(part == ".." for part in name.split("/"))


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _ignored(name: str) -> bool:
    """macOS metadata and folders: never members, never reported."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    return name.endswith("/") or name.startswith("__MACOSX/") or last.startswith("._") or last == ".DS_Store"


def open_archive(
    archive: BinaryIO,
    *,
    max_members: int,
    max_member_bytes: int,
    max_total_bytes: int,
    suffixes: tuple[str, ...] | None = NIFTI_SUFFIXES,
) -> Archive:
    """Open a zip from a seekable binary file and check its whole directory (see the module docstring).

    Parameters
    ----------
    archive : seekable binary file
    max_members : the most entries the archive may list (folders and skipped files count)
    max_member_bytes : the most one member may declare (uncompressed)
    max_total_bytes : the most the members may declare together (uncompressed)
    suffixes : the file names a member may end with (lower case); None: any (a DICOM study,
        whose files often have no suffix); the others are skipped
    """
    try:
        opened = zipfile.ZipFile(archive)
        infos = opened.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise ArchiveError("not_a_zip", f"This is not a readable .zip archive ({error}).") from None
    if len(infos) > max_members:
        raise ArchiveError(
            "too_many_members",
            f"The archive lists {len(infos)} entries; at most {max_members} are accepted. "
            "Split it into smaller archives.",
        )
    members, skipped = [], []
    total = 0
    for info in infos:
        name = info.filename
        shown = name if len(name) <= 80 else name[:80] + "..."
        if _unsafe(name) or _is_symlink(info):
            raise ArchiveError(
                "unsafe_path",
                f"The archive holds {shown!r}: an absolute path, a '..' component, a backslash or a link. "
                "Nothing was stored; zip the NIfTI files themselves.",
            )
        if info.flag_bits & 0x1:
            raise ArchiveError("encrypted", f"{shown!r} is encrypted; upload an archive without a password.")
        if info.file_size > max_member_bytes:
            raise ArchiveError(
                "too_large", f"{shown!r} declares {info.file_size} bytes; one file may hold at most {max_member_bytes}."
            )
        if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(
                "zip_bomb",
                f"{shown!r} inflates {info.file_size} bytes from {info.compress_size} "
                f"(more than {MAX_RATIO} times): refused as a zip bomb.",
            )
        total += info.file_size
        if total > max_total_bytes:
            raise ArchiveError(
                "too_large", f"The archive's files declare more than {max_total_bytes} bytes together; split it."
            )
        if _ignored(name):
            continue
        filename = name.rsplit("/", 1)[-1]
        if suffixes is not None and not filename.lower().endswith(suffixes):
            skipped.append((name, "not_nifti", "not a NIfTI file (.nii or .nii.gz)"))
            continue
        members.append(Member(name=name, filename=filename, size=info.file_size, info=info))
    return Archive(zip=opened, members=members, skipped=skipped)
