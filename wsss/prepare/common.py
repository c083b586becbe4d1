"""What both preparation scripts share: the error type, symlinks written atomically, the summary table."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence


class PrepareError(RuntimeError):
    """Input that cannot be prepared; the message names the file and the fix. Raised before anything is written."""


def atomic_symlink(link: Path, target: Path) -> None:
    """``link`` -> ``target`` (replacing an older link, never a real folder or file)."""
    link = Path(link)
    if link.exists() and not link.is_symlink():
        raise PrepareError(f"{link} exists and is not a symlink; move it away (the images are linked, not copied)")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(Path(target).resolve(), tmp)
    os.replace(tmp, link)


def format_summary(title: str, rows: Mapping[str, Mapping[str, object]]) -> str:
    """A small table: one line per split, one column per count."""
    columns = list(next(iter(rows.values())).keys()) if rows else []
    width = max([len(c) for c in columns] + [6])
    lines = [title, "split".ljust(10) + "".join(c.rjust(width + 2) for c in columns)]
    for split, counts in rows.items():
        lines.append(split.ljust(10) + "".join(str(counts[c]).rjust(width + 2) for c in columns))
    return "\n".join(lines)


def map_files(fn: Callable, tasks: Sequence, workers: int, progress: bool, desc: str) -> list:
    """``fn(task)`` for every task in task order, on ``workers`` processes (0/1: here), with a progress bar.

    Why not :func:`wsss.workers.map_tasks`: that pool comes with the CRF module and torch, seconds of import on a
    small machine for scripts that only read and write files.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit="file", dynamic_ncols=True)
    out = []
    if int(workers) <= 1 or len(tasks) < 2:
        for task in tasks:
            out.append(fn(task))
            if bar is not None:
                bar.update(1)
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(int(workers)) as pool:
            chunk = max(1, min(64, len(tasks) // (8 * int(workers))))
            for res in pool.imap(fn, tasks, chunksize=chunk):
                out.append(res)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out
