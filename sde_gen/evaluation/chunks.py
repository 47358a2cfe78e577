"""Chunks spread over ranks: which chunks this rank takes, its progress bar, and the gathering of
per-point results and NFE counts from every rank.

``N`` items are cut into chunks of ``batch_size``. Under ``torch.distributed`` (e.g. ``torchrun``)
each rank takes a contiguous run of chunks (:func:`sde_gen.distributed.shard_range` over the chunk
indices; counts differ by at most one), and the per-point results are gathered on every rank in
the original order. On one process the single rank takes every chunk.
"""

from __future__ import annotations

import torch

from .. import distributed as dist_utils


def count_chunks(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def my_chunks(num_chunks: int) -> range:
    """The chunk indices this rank handles: a contiguous run, balanced across ranks."""
    return range(*dist_utils.shard_range(num_chunks))


def progress_bar(total: int, enabled: bool, desc: str):
    if not enabled or not dist_utils.is_main_process():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


def gather_chunks(parts: list[torch.Tensor], bar) -> torch.Tensor:
    """Close the progress bar; this rank's per-point results (float64, CPU), gathered from every
    rank in rank order: the original order, since ranks hold contiguous runs of chunks."""
    if bar is not None:
        bar.close()
    mine = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    return dist_utils.gather_cat(mine)


def nfe_stats(chunk_nfe: list[int]) -> dict:
    """Gather this rank's per-chunk NFE: the total, per chunk (in chunk order) and per rank."""
    per_chunk = dist_utils.gather_cat(torch.tensor(chunk_nfe, dtype=torch.int64))
    per_rank = dist_utils.gather_cat(torch.tensor([sum(chunk_nfe)], dtype=torch.int64))
    return {
        "nfe": int(per_rank.sum()),
        "nfe_per_chunk": per_chunk.tolist(),
        "nfe_per_rank": per_rank.tolist(),
        "nfe_rank_max": int(per_rank.max()),
        "nfe_rank_min": int(per_rank.min()),
    }
