"""Chunked top-K search over global descriptors (inner product = cosine for L2-normalised rows).

`topk_similar(queries, database, k)` never holds more than one block of similarities
([query_chunk, db_chunk]) and one float32 copy of a database block, so 100,000 x 100,000
searches run in a bounded amount of memory whatever the collection size. The descriptors
themselves may be kept as float16 (half the memory of float32): each block is converted to
float32 on the fly, so the similarities are float32 products of the float16 values.

Self-matches (and any other pair that must not be returned) are excluded through integer ids:
a query and a database row with the same id are never paired (`query_ids` / `db_ids`,
e.g. indices into one list of image names). Results with a similarity below `min_score`, or
missing because the database is smaller than k, come back as index -1 and score -inf.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = np.ndarray | Tensor

__all__ = ["topk_similar", "brute_force_topk"]


def _as_tensor(array: ArrayLike) -> Tensor:
    if isinstance(array, Tensor):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


def _ids(ids: Sequence[int] | ArrayLike | None, n: int, what: str) -> Tensor | None:
    if ids is None:
        return None
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    if ids.shape != (n,):
        raise ValueError(f"{what} must have one id per row ({n}), got shape {tuple(ids.shape)}")
    return ids


def topk_similar(queries: ArrayLike, database: ArrayLike, k: int, *,
                 query_ids: Sequence[int] | ArrayLike | None = None,
                 db_ids: Sequence[int] | ArrayLike | None = None,
                 min_score: float | None = None, query_chunk: int = 2048,
                 block_bytes: int = 64 << 20, device: str | torch.device | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar database rows of every query row, by inner product.

    queries:   [Nq, D] float16/float32 (numpy or torch).
    database:  [Nd, D], same D.
    k:         neighbours per query (fewer come back as -1 when Nd - excluded < k).
    query_ids, db_ids: optional integer ids; a (query, row) pair with equal ids is skipped.
    min_score: similarities strictly below it are dropped (hloc keeps sim >= 0: min_score=0).
    query_chunk: queries per block; block_bytes bounds one float32 database block
               (rows = block_bytes / (4 D)).
    device:    where products are computed (default: CPU; 'cuda' streams blocks to the GPU).

    Returns (scores [Nq, k] float32, sorted descending, -inf where none; indices [Nq, k] int64
    into `database`, -1 where none). Equal scores come back in no particular order.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    q_all, db_all = _as_tensor(queries), _as_tensor(database)
    if q_all.ndim != 2 or db_all.ndim != 2 or q_all.shape[1] != db_all.shape[1]:
        raise ValueError(f"queries [Nq, D] and database [Nd, D] must share D, got "
                         f"{tuple(q_all.shape)} and {tuple(db_all.shape)}")
    nq, nd, dim = q_all.shape[0], db_all.shape[0], q_all.shape[1]
    qid, did = _ids(query_ids, nq, "query_ids"), _ids(db_ids, nd, "db_ids")
    if (qid is None) != (did is None):
        raise ValueError("give both query_ids and db_ids, or neither")
    device = torch.device(device or "cpu")
    db_rows = max(1, min(nd, block_bytes // max(1, 4 * dim)))
    kk = min(k, nd)
    out_scores = np.full((nq, k), -np.inf, np.float32)
    out_index = np.full((nq, k), -1, np.int64)
    neg_inf = float("-inf")
    for q0 in range(0, nq, query_chunk):
        q = q_all[q0:q0 + query_chunk].to(device=device, dtype=torch.float32)
        best_s = torch.full((q.shape[0], kk), neg_inf, device=device)
        best_i = torch.full((q.shape[0], kk), -1, dtype=torch.int64, device=device)
        q_ids = qid[q0:q0 + query_chunk].to(device) if qid is not None else None
        for d0 in range(0, nd, db_rows):
            block = db_all[d0:d0 + db_rows].to(device=device, dtype=torch.float32)
            sim = q @ block.T  # [nq_chunk, rows]
            if q_ids is not None:
                same = q_ids[:, None] == did[d0:d0 + db_rows].to(device)[None, :]
                sim.masked_fill_(same, neg_inf)
            take = min(kk, sim.shape[1])
            s, i = torch.topk(sim, take, dim=1)  # sorted descending
            # merge the running best with this block's best
            cat_s = torch.cat([best_s, s], 1)
            cat_i = torch.cat([best_i, i + d0], 1)
            order = _stable_desc(cat_s)[:, :kk]
            best_s = torch.gather(cat_s, 1, order)
            best_i = torch.gather(cat_i, 1, order)
            del sim, block
        invalid = torch.isinf(best_s) & (best_s < 0)
        if min_score is not None:
            invalid |= best_s < min_score
        best_i = best_i.masked_fill(invalid, -1)
        best_s = best_s.masked_fill(invalid, neg_inf)
        out_scores[q0:q0 + q.shape[0], :kk] = best_s.cpu().numpy()
        out_index[q0:q0 + q.shape[0], :kk] = best_i.cpu().numpy()
    return out_scores, out_index


def _stable_desc(scores: Tensor) -> Tensor:
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def brute_force_topk(queries: ArrayLike, database: ArrayLike, k: int, *,
                     query_ids=None, db_ids=None, min_score: float | None = None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the full [Nq, Nd] similarity matrix, then a stable sort (tests, benchmark)."""
    q = _as_tensor(queries).float()
    db = _as_tensor(database).float()
    sim = q @ db.T
    if query_ids is not None:
        same = (torch.as_tensor(np.asarray(query_ids))[:, None]
                == torch.as_tensor(np.asarray(db_ids))[None, :])
        sim.masked_fill_(same, float("-inf"))
    order = _stable_desc(sim)[:, :k]
    scores = torch.gather(sim, 1, order)
    invalid = torch.isinf(scores) & (scores < 0)
    if min_score is not None:
        invalid |= scores < min_score
    out_s = np.full((q.shape[0], k), -np.inf, np.float32)
    out_i = np.full((q.shape[0], k), -1, np.int64)
    out_s[:, :order.shape[1]] = scores.masked_fill(invalid, float("-inf")).numpy()
    out_i[:, :order.shape[1]] = order.masked_fill(invalid, -1).numpy()
    return out_s, out_i
