"""The kernel's weight layout, shared by transform_weight, the CPU lowering and the GPU kernels.

Weights are stored [N, Kpad] (K padded to a whole superblock, packed LSB-first along K). Inside each
superblock of SB = 4 * E elements the order is permuted so that the thread with lane % 4 == q loads
its E elements (16 bytes) with one load, and the register-level decoder turns each 32-bit word
straight into mma B fragments with A in its natural order:

- a word of EW = 32 / bits elements decodes into EW / PR registers of PR elements each (PR = 2 f16
  for the f16 mma m16n8k16, PR = 4 int8 for the s8 mma m16n8k32); element e of a word lands in
  register i = e % (EW / PR) at position h = e // (EW / PR) (the magic-number decoders' natural
  order: (e0, e4), (e1, e5), ... for int4);
- register r of the thread covers mma step r // 2; its fragment position is the logical k
  KS * (r // 2) + (KS / 2) * (r % 2) + PR * q + h, with KS the mma's k (16 or 32).

Every superblock row chunk is 64 bytes. The chunks are tiled over rows: the TILE_ROWS rows of tile
t = n // TILE_ROWS keep their region of the [N, Kpad] tensor, but store it superblock by superblock,
chunk (n, s) at chunk index TILE_ROWS * t * S + s * r + n % TILE_ROWS of the whole tensor (S
superblocks per row, r rows in the tile: TILE_ROWS except in a last, partial tile). A kernel's warp
then reads 512 or 1024 contiguous bytes per superblock instead of 64-byte pieces of 8-16 rows.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

TILE_ROWS = 16  # rows of W whose superblock chunks are stored together
CHUNK_BYTES = 64  # one row's superblock: 4 threads x 16 bytes, whatever the element width


@dataclass(frozen=True)
class WeightLayout:
    bits: int  # storage bits of one element: 1, 2, 4, 8 or 16
    int8_mma: bool  # fragments of the s8 mma (int8 A) rather than the f16 one

    @property
    def elems_per_thread(self) -> int:  # E: one 16-byte load
        return 128 // self.bits

    @property
    def superblock(self) -> int:  # SB: the 4 threads sharing an n column
        return 4 * self.elems_per_thread

    @property
    def per_reg(self) -> int:  # PR
        return 4 if self.int8_mma else 2

    @property
    def mma_k(self) -> int:  # KS
        return 32 if self.int8_mma else 16

    @property
    def word_elems(self) -> int:  # EW
        return 32 // self.bits

    def group_keys(self, group: int) -> list:
        """Per mma step of a superblock: which of the superblock's quantization groups (of `group`
        elements) it uses, numbered from 0 within the superblock."""
        KS, SB = self.mma_k, self.superblock
        steps = SB // KS
        if SB % group == 0:  # whole groups inside the superblock
            return [(KS * step) // group for step in range(steps)]
        if group % SB == 0:  # the superblock inside one group
            return [0] * steps
        return list(range(steps))  # groups not aligned to superblocks: one lookup per step

    def padded(self, K: int) -> int:
        return -(-K // self.superblock) * self.superblock

    def logical_k(self, q: int, e_in_chunk: int) -> int:
        """Logical k (within the superblock) of element `e_in_chunk` of lane-group q's 16 bytes."""
        regs_per_word = max(self.word_elems // self.per_reg, 1)
        word, e = divmod(e_in_chunk, self.word_elems)
        i, h = e % regs_per_word, e // regs_per_word
        r = regs_per_word * word + i
        return self.mma_k * (r // 2) + (self.mma_k // 2) * (r % 2) + self.per_reg * q + h

    @functools.cached_property
    def permutation(self) -> tuple:
        """Stored position p -> logical k offset inside a superblock."""
        E = self.elems_per_thread
        return tuple(self.logical_k(p // E, p % E) for p in range(self.superblock))

    @functools.cached_property
    def inverse(self) -> tuple:
        """Logical k offset -> stored position inside a superblock."""
        inv = [0] * self.superblock
        for p, k in enumerate(self.permutation):
            inv[k] = p
        return tuple(inv)


def layout_of(bits: int, A_dtype: str) -> WeightLayout:
    return WeightLayout(bits, A_dtype == "int8")


def _chunk_order(N: int, S: int) -> torch.Tensor:
    """For each stored chunk position, the (n * S + s) chunk that goes there."""
    order = torch.empty(N * S, dtype=torch.long)
    rows = torch.arange(N).repeat_interleave(S)
    sbs = torch.arange(S).repeat(N)
    t, i = rows // TILE_ROWS, rows % TILE_ROWS
    r = torch.clamp(N - TILE_ROWS * t, max=TILE_ROWS)
    order[TILE_ROWS * t * S + sbs * r + i] = rows * S + sbs
    return order


def to_kernel_order(values: torch.Tensor, layout: WeightLayout) -> torch.Tensor:
    """[N, K] logical values or codes -> [N, Kpad] in stored order (padding holds zeros)."""
    N, K = values.shape
    SB, Kp = layout.superblock, layout.padded(K)
    padded = torch.zeros((N, Kp), dtype=values.dtype, device=values.device)
    padded[:, :K] = values
    perm = torch.tensor(layout.permutation, device=values.device)
    chunks = padded.view(N * (Kp // SB), SB)[:, perm]
    return chunks[_chunk_order(N, Kp // SB).to(values.device)].reshape(N, Kp)


def from_kernel_order(stored: torch.Tensor, layout: WeightLayout, K: int) -> torch.Tensor:
    """Inverse of to_kernel_order: [N, Kpad] stored order -> [N, K] logical order."""
    N, Kp = stored.shape
    SB = layout.superblock
    inv = torch.tensor(layout.inverse, device=stored.device)
    chunks = torch.empty((N * (Kp // SB), SB), dtype=stored.dtype, device=stored.device)
    chunks[_chunk_order(N, Kp // SB).to(stored.device)] = stored.reshape(N * (Kp // SB), SB)
    return chunks[:, inv].reshape(N, Kp)[:, :K]
