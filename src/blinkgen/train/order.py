"""The order in which training visits images: a pure function of (seed, step), so resume is exact
and N processes sharing a global batch see the batch one process would.

- `BatchOrder`: every image once per epoch (a seeded permutation per epoch).
- `GroupOrder`: every GROUP once per epoch, then one of its members drawn uniformly. Emoji come
  in groups of very different sizes (a waving hand has 6 skin tones x 2 styles, a pizza 2
  styles), so plain epochs spend half their draws on skin-tone people; drawing the subject first
  gives every subject the same share of training. Groups come from `ImageCaptionSet.groups`.
"""
from __future__ import annotations

import torch

ORDERS = ("image", "group")


class BatchOrder:
    """Global batch b = positions [bB, (b+1)B) of an endless stream of per-epoch permutations."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perms = n, seed, {}

    @property
    def epoch_size(self) -> int:
        return self.n

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int, B: int) -> torch.Tensor:
        """(B,) int64 image indices of global batch `step`."""
        pos = torch.arange(step * B, (step + 1) * B)
        ep = pos // self.epoch_size
        return torch.cat([self.perm(e)[pos[ep == e] % self.epoch_size] for e in ep.unique().tolist()])


class GroupOrder(BatchOrder):
    """Position p of the stream: epoch p // G, the (p % G)-th group of that epoch's permutation of
    the G groups, and within it the member picked by that epoch's uniform draw."""

    def __init__(self, groups: list[str], seed: int):
        uniq = sorted(set(groups))
        gid = {g: k for k, g in enumerate(uniq)}
        keys = torch.tensor([gid[g] for g in groups])
        self.members = torch.argsort(keys, stable=True)  # image indices, grouped, index order inside
        self.sizes = torch.bincount(keys, minlength=len(uniq))  # (G,)
        self.offsets = torch.cumsum(self.sizes, 0) - self.sizes  # (G,) start of each group in members
        super().__init__(len(uniq), seed)

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            groups = torch.randperm(self.n, generator=g)  # (G,)
            u = torch.rand(self.n, generator=g, dtype=torch.float64)
            pick = (u * self.sizes[groups]).long()  # uniform member index in [0, size]
            self._perms[epoch] = self.members[self.offsets[groups] + torch.minimum(pick, self.sizes[groups] - 1)]
        return self._perms[epoch]


def make_order(kind: str, groups: list[str], seed: int) -> BatchOrder:
    """`kind` "image" (plain epochs over the images) or "group" (balanced over `groups`)."""
    if kind == "image":
        return BatchOrder(len(groups), seed)
    if kind == "group":
        return GroupOrder(groups, seed)
    raise ValueError(f"unknown batch order {kind!r}; choose from {ORDERS}")
