"""``--out`` as an fsspec URL (``s3://``, ``gs://``, …): a local staging folder, synced.

The commit stage writes local files (atomic renames, resume records); an object store has
no rename. So a run with a remote ``--out`` writes into a local staging folder and uploads
from it:

- before the run, the remote folder is listed once: its resume records, journals and
  summary are downloaded (the summary covers the whole folder), and every other output gets
  an empty local placeholder (a video's thumbnails, the folder alone), so a finished video
  is seen as finished without downloading it;
- a placeholder the run must read (the outputs of a video whose file moved, which
  ``vidcap.moved`` rewrites to name its new path) is downloaded then (``fetch_placeholders``);
- during the run, every ``SYNC_SECONDS``, the outputs put in place since (each one tells:
  ``outputs.telling``) and the journals that grew are uploaded; once more at the end (also
  after a failure), every file new or changed since, the whole folder read — outputs and
  Parquet shards first, then the resume records that vouch for them, ``summary.json``
  last. An object appears whole or not at all, so the remote folder keeps the local
  guarantees: a record never names an output that is not there, and a rerun resumes from
  what was uploaded. What a run stages (thumbnails as they come, ``.part`` files) is never
  uploaded;
- a thumbnail uploaded at a sync leaves the staging folder: an empty placeholder stays in
  its place (the page lists a video's thumbnails by name), so the staging folder holds the
  run's captions and what the last sync interval made, not every thumbnail of the run
  (5–15 KB a sampled frame). Where the last upload fails, the placeholders are removed
  before the message names the folder, so a copy of it to the remote folder writes no
  empty file over an uploaded one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from vidcap import scratch
from vidcap.errors import UploadFailed, UsageError, VidcapError, reason
from vidcap.inputs import fsspec_error, is_url, local_path, shown_source
from vidcap.journal import JOURNAL_DIR
from vidcap.out_lock import LOCK_NAME
from vidcap.outputs import PART_SUFFIX, STAGING_NAME, THUMBS_DIR, THUMBS_STAGING, telling
from vidcap.records import STATE_DIR, SUMMARY
from vidcap.remote_lease import LEASE, LeaseLost, RemoteLease

log = logging.getLogger(__name__)

SYNC_SECONDS = 30.0
LOCK = f"{STATE_DIR}/{LOCK_NAME}"
JOURNALS = f"{STATE_DIR}/{JOURNAL_DIR}/"
# Where the commit stage stages a video's thumbnails (``commit.thumbs_staging``): nothing
# there is an output. (Earlier versions uploaded what a sync found there.)
STAGED_THUMBS = f"{STATE_DIR}/{THUMBS_STAGING}/"


def staged_only(rel: str) -> bool:
    """Is the file at ``rel`` (relative to the folder) something a run stages, never an
    output: a part file, the run's lock, a thumbnail staged as it comes?"""
    parts = rel.split("/")
    return (
        rel == LOCK
        or rel.startswith(STAGED_THUMBS)
        or STAGING_NAME in parts
        or any(part.endswith(PART_SUFFIX) for part in parts)
    )


class StagedFolder:
    """A local folder mirrored to the remote folder ``url``."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = shown_source(url)  # (for messages: without a password it holds)
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise UsageError(f"--out {self.url}: {_without(fsspec_error(exc), url)}") from exc
        except Exception as exc:  # noqa: BLE001 - ftp://, sftp://, hdfs:// connect here
            why = _without(reason(exc), url)
            raise UsageError(f"--out {self.url}: cannot connect ({why})") from exc
        self.lost: LeaseLost | None = None  # set once another run took the folder over
        self.root = root.rstrip("/")
        self.local = scratch.folder("out")
        self._sent: dict[str, tuple[int, int]] = {}  # relative path → (size, mtime_ns)
        self._told: set[str] = set()  # relative paths put in place since the last sync
        self._told_lock = threading.Lock()  # (the run's thread adds while a sync uploads)
        self.placeholders: set[str] = set()  # relative paths of files not downloaded
        self._lock = threading.Lock()
        # One run at a time there; writing it is the check that the folder takes files.
        self.lease = RemoteLease(self.fs, self.root, url, self._upload, self.local)

    def keep(self) -> Path:
        """The staging folder kept, its outputs not uploaded: renamed out of the pattern
        of folders a later run removes (``scratch.sweep``, a lease taken over), where it
        can; where it now is."""
        kept = self.local.with_name(self.local.name.replace("vidcap-out-", "vidcap-kept-out-", 1))
        try:
            self.local.rename(kept)
        except OSError:
            return self.local
        return kept

    def pull(self) -> None:
        """Records and summary down; placeholders for the other outputs."""
        try:
            remote = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            remote = {}
        except Exception as exc:  # noqa: BLE001 - each file system raises its own
            raise UsageError(f"--out {self.url}: cannot list it ({reason(exc)})") from exc
        self.lease.claim(listed=f"{self.root}/{LEASE}" in remote)
        fetch: dict[str, str] = {}
        staged: list[str] = []  # what an earlier version uploaded from its staging
        for path, info in remote.items():
            if info.get("type") == "directory":
                continue
            rel = path.strip("/").removeprefix(self.root.strip("/")).lstrip("/")
            local = self.local / rel
            if rel == LEASE:
                continue  # (``vidcap.remote_lease``: never a file of the staging folder)
            if staged_only(rel):
                staged.append(path)
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            if rel.startswith(f"{THUMBS_DIR}/") and rel.count("/") == 2:
                continue  # (a done video's thumbnails: their folder alone)
            if rel == SUMMARY or rel.startswith(f"{STATE_DIR}/"):
                fetch[path] = rel
            else:
                local.touch()
                self._mark(rel)
                self.placeholders.add(rel)
        if staged:
            try:
                self.fs.rm(staged)
                log.info("--out %s: %d staged files an earlier run left removed", self.url,
                         len(staged))  # fmt: skip
            except OSError as exc:  # (left there: nothing reads them)
                log.info("--out %s: staged files an earlier run left not removed: %s",
                         self.url, exc)  # fmt: skip
        if fetch:  # one call: concurrent on object stores
            self.fs.get(list(fetch), [str(self.local / rel) for rel in fetch.values()])
            for rel in fetch.values():
                self._mark(rel)
        log.info("--out %s: %d files listed", self.url, len(remote))

    def _upload(self, put: Callable[[], object], remote: str) -> None:
        """``put()``, which writes ``remote``; on a file system with folders (``local://``,
        ``sftp://``, ``hdfs://``: fsspec makes none for a file put, unlike an object store)
        where its folder is missing, the folder is made and ``put()`` called again."""
        try:
            put()
        except FileNotFoundError:
            self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            put()

    def told(self, path: Path) -> None:
        """An output put in place (``outputs.telling``): uploaded at the next sync."""
        if path.is_relative_to(self.local):
            with self._told_lock:
                self._told.add(path.relative_to(self.local).as_posix())

    def push(self, everything: bool = False) -> int:
        """Upload what is new or changed, records after outputs, the summary last: the
        outputs put in place since the last sync and the journals, or (``everything``) every
        file the folder holds."""
        with self._lock:
            with self._told_lock:
                told, self._told = self._told, set()
            try:
                return self._push(told, everything)
            except BaseException:
                with self._told_lock:
                    self._told |= told  # (uploaded at the next sync: those done are marked)
                raise

    def _push(self, told: set[str], everything: bool) -> int:
        """One sync (``push``), under its lock; ``told``: what was put in place since."""
        if everything:
            candidates = self._files(self.local)
        else:
            candidates = self._files(self.local / STATE_DIR / JOURNAL_DIR)
            for rel in told:
                candidates.extend(self._files(self.local / rel))
        # Each changed file's (size, mtime) before its upload: one that changes while it is
        # sent (a journal growing) is then sent again at the next sync.
        changed: dict[str, tuple[int, int]] = {}
        for path in candidates:
            rel = path.relative_to(self.local).as_posix()
            if staged_only(rel):
                continue  # (the run lock, a part file, a staged thumbnail: never an output)
            with contextlib.suppress(FileNotFoundError):  # (replaced or removed since)
                stat = path.stat()
                if self._sent.get(rel) != (seen := (stat.st_size, stat.st_mtime_ns)):
                    changed[rel] = seen
        order = sorted(
            changed, key=lambda rel: (rel == SUMMARY, rel.startswith(f"{STATE_DIR}/"), rel)
        )
        for rel in order:
            local, remote = str(self.local / rel), f"{self.root}/{rel}"
            if not os.path.exists(local):
                del changed[rel]  # (a journal whose video was committed meanwhile)
                continue
            self._upload(functools.partial(self.fs.put_file, local, remote), remote)
            self._sent[rel] = changed[rel]
            if rel.startswith(f"{THUMBS_DIR}/") and not everything:
                self._leave(rel, changed[rel])
        # An output removed here (told: a redone video's file of a format no longer written,
        # its thumbnails under --no-thumbs) goes there too: it no longer matches its captions.
        for rel in told:
            if not (self.local / rel).exists():
                self._remove_there(rel)
        # A journal removed here (its video's record, uploaded above, vouches for it) goes
        # there too, or every rerun would download it again.
        gone = [r for r in self._sent if r.startswith(JOURNALS) and not (self.local / r).exists()]
        for rel in gone:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self.root}/{rel}")
            del self._sent[rel]
        return len(changed)

    def _remove_there(self, rel: str) -> None:
        """Remove the remote file or folder ``rel``, removed here."""
        remote = f"{self.root}/{rel}"
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isdir(remote):
                self.fs.rm(remote, recursive=True)
            elif self.fs.exists(remote):
                self.fs.rm_file(remote)
        self._sent.pop(rel, None)
        self.placeholders.discard(rel)

    def _leave(self, rel: str, sent: tuple[int, int]) -> None:
        """An uploaded thumbnail's bytes leave the staging folder; an empty placeholder
        stays, as ``pull`` makes them, unless the file changed while it was sent."""
        path = self.local / rel
        with contextlib.suppress(FileNotFoundError):
            stat = path.lstat()  # (a link, or a file with another name too, is left whole)
            if (stat.st_size, stat.st_mtime_ns) == sent and stat.st_size and stat.st_nlink == 1:
                os.truncate(path, 0)
                self._mark(rel)
                self.placeholders.add(rel)

    def drop_placeholders(self) -> None:
        """Remove the empty placeholders (pulled, or thumbnails already uploaded): the
        staging folder then holds nothing that is not an output of its own."""
        with self._lock:
            for rel in list(self.placeholders):
                path = self.local / rel
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_size == 0:
                        path.unlink()
                self.placeholders.discard(rel)

    def fetch(self, paths: Sequence[Path]) -> None:
        """Download the files behind the placeholders among ``paths`` (local paths)."""
        with self._lock:
            wanted = {}
            for path in paths:
                rel = Path(path).relative_to(self.local).as_posix()
                if rel in self.placeholders and (self.local / rel).stat().st_size == 0:
                    wanted[f"{self.root}/{rel}"] = rel
            if not wanted:
                return
            try:
                self.fs.get(list(wanted), [str(self.local / rel) for rel in wanted.values()])
            except OSError as exc:  # the run goes on: the video is captioned again
                log.warning(
                    "--out %s: could not download %d outputs (%s)", self.url, len(wanted), exc
                )
                return
            for rel in wanted.values():
                self.placeholders.discard(rel)
                self._mark(rel)

    @staticmethod
    def _files(path: Path) -> list[Path]:
        """The files at ``path``: itself, or those of the folder it is (none if neither)."""
        try:
            if path.is_file():
                return [path]
            return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        except OSError:  # (replaced while read: the new one is told in its turn)
            return []

    def _mark(self, rel: str) -> None:
        stat = (self.local / rel).stat()
        self._sent[rel] = (stat.st_size, stat.st_mtime_ns)

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


@contextmanager
def output_folder(out: str | Path) -> Iterator[Path]:
    """The local folder a run writes into: ``out`` itself, or a staging folder for a URL,
    synced every ``SYNC_SECONDS``."""
    if not is_url(str(out)):
        yield Path(local_path(str(out)))
        return
    staged = StagedFolder(str(out))
    try:
        staged.pull()
    except BaseException:
        staged.lease.release()
        staged.close()
        raise
    stop = threading.Event()
    interval = SYNC_SECONDS  # (read now: a test shortens it)

    def sync() -> None:
        while not stop.wait(interval):
            try:
                staged.lease.renew()
                staged.push()
            except LeaseLost as exc:  # nothing more is uploaded; the run's end says so
                staged.lost = exc
                log.warning("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - retried at the next sync and at the end
                log.warning("uploading to %s failed (%s); will retry", staged.url, reason(exc))
                log.debug("the upload's error", exc_info=True)

    thread = threading.Thread(target=sync, name="vidcap-upload", daemon=True)
    thread.start()
    _staged[staged.local] = staged
    try:
        with telling(staged.told):
            yield staged.local
    except BaseException:
        _last_push(staged, stop, thread, failing=True)
        raise
    _last_push(staged, stop, thread, failing=False)


def _last_push(
    staged: StagedFolder, stop: threading.Event, thread: threading.Thread, failing: bool
) -> None:
    """The sync thread stopped, every file new or changed uploaded, the staging folder
    removed. Where the upload fails the folder stays, and the message names it: an error
    (``UploadFailed``), or, where the run is ``failing`` already, a line before its own."""
    stop.set()
    thread.join()
    try:
        if staged.lost is not None:  # (found at a sync)
            raise staged.lost
        staged.lease.renew()  # (still this run's folder: else nothing more goes there)
        log.info("uploaded %d files to %s", staged.push(everything=True), staged.url)
    except LeaseLost as exc:
        staged.lost = exc
        _left(staged, f"{exc}; this run's outputs", failing, LeaseLost)
        return
    except Exception as exc:  # noqa: BLE001 - each file system raises its own
        _left(staged, f"uploading to {staged.url} failed ({reason(exc)}); the outputs", failing,
              UploadFailed)  # fmt: skip
        return
    finally:
        if staged.lost is None:  # (another run's lease is that run's to remove)
            staged.lease.release()  # (also where the outputs wait in staging: none holds it)
        del _staged[staged.local]
    staged.close()


def _left(staged: StagedFolder, what: str, failing: bool, error: type[VidcapError]) -> None:
    """The last upload did not happen: the staging folder kept (its placeholders removed,
    so a copy of it to the remote folder overwrites no uploaded file with an empty one) and
    named, in the run's ``error``, or (``failing``: the run has its own) a line before it."""
    staged.drop_placeholders()
    message = f"{what} are left in {staged.keep()}"
    if failing:
        log.error("%s", message)
        return
    raise error(message)


_staged: dict[Path, StagedFolder] = {}  # the staging folders of the runs in this process


def _without(text: str, url: str) -> str:
    """``text`` (a library's message) with ``url`` named without its password."""
    return text.replace(url, shown_source(url))


def shown_name(local: Path) -> str:
    """The name an output folder is shown by (the report page's title): a staged URL's
    last path part (``s3://bucket/captions/`` → ``captions``), not its staging folder's
    (``vidcap-out-…``); else the folder's own."""
    local = Path(local).resolve()
    for staging, staged in list(_staged.items()):
        if Path(staging).resolve() == local:
            name = urlsplit(staged.url).path.rstrip("/").rsplit("/", 1)[-1]
            return name or staged.url
    return local.name


def page_folder(local: Path) -> Path | None:
    """Where the page written in ``local`` is read from, for links relative to it: a
    staged URL's remote folder where its file system is this machine's (``local://``),
    None where it is elsewhere (an object store: a link to this machine's files can only be
    absolute); else ``local`` itself."""
    resolved = Path(local).resolve()
    for staging, staged in list(_staged.items()):
        if Path(staging).resolve() == resolved:
            from fsspec.implementations.local import LocalFileSystem

            return Path(staged.root) if isinstance(staged.fs, LocalFileSystem) else None
    return resolved


def fetch_placeholders(paths: Sequence[Path]) -> None:
    """Where ``paths`` are placeholders of a staged remote ``--out``, download them: the
    outputs a run must read before it rewrites them (``vidcap.moved``). Local folders have
    none: nothing is done. One request for all of a folder's (concurrent on object stores)."""
    for local, staged in list(_staged.items()):
        staged.fetch([path for path in paths if Path(path).is_relative_to(local)])
