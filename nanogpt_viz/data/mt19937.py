"""MT19937, the generator torch's CPU generator, numpy's RandomState and llm.c's rand.h all use.

Seeded with init_genrand (torch.manual_seed(s), RandomState(s), llm.c's manual_seed(s) agree), with a
jump-ahead: the state n outputs later in about 0.05 s for any n, as `x**n` modulo the generator's
characteristic polynomial (found once with Berlekamp-Massey, ~0.1 s) applied to a window of the
untempered output sequence. Pure numpy.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

_N = 624          # MT19937 words of state
_DEG = 19937      # degree of its characteristic polynomial
_U32 = np.uint32


def seed_key(seed: int) -> np.ndarray:
    """init_genrand(seed): the 624 words torch.manual_seed / RandomState(seed) start from."""
    key = [seed & 0xFFFFFFFF]
    for i in range(1, _N):
        prev = key[-1]
        key.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    return np.array(key, dtype=_U32)


def bitgen(key: np.ndarray, pos: int) -> np.random.MT19937:
    bg = np.random.MT19937()
    bg.state = {"bit_generator": "MT19937",
                "state": {"key": np.asarray(key, dtype=_U32), "pos": int(pos)}}
    return bg


def get_state(bg: np.random.MT19937) -> tuple[np.ndarray, int]:
    st = bg.state["state"]
    return np.array(st["key"], dtype=_U32), int(st["pos"])


def _untemper(y: np.ndarray) -> np.ndarray:
    """Invert MT19937's output tempering (vectorised)."""
    y = y.astype(_U32, copy=True)
    y ^= y >> _U32(18)
    y ^= (y << _U32(15)) & _U32(0xEFC60000)
    t = y.copy()
    for _ in range(4):  # y ^= (y << 7) & b, undone 7 bits at a time
        t = y ^ ((t << _U32(7)) & _U32(0x9D2C5680))
    y = t
    t = y.copy()
    for _ in range(2):  # y ^= y >> 11
        t = y ^ (t >> _U32(11))
    return t


@lru_cache(maxsize=1)
def _char_poly() -> tuple[int, list[int]]:
    """MT19937's characteristic polynomial P (bit i = coefficient of x**i) and a byte table.

    Berlekamp-Massey over GF(2) on the lowest bit of 2 * 19937 outputs gives the connection
    polynomial C; P is its reciprocal. The table holds, for each byte b, the multiple of P
    whose bits 19937..19944 equal b, for reducing 8 bits at a time.
    """
    bits = (bitgen(seed_key(5489), _N).random_raw(2 * _DEG) & 1).tolist()
    c, b, length, shift, window = 1, 1, 0, 1, 0
    for k, s in enumerate(bits):
        window = (window << 1) | s          # bit i = s[k - i]
        if (c & window).bit_count() & 1:    # discrepancy
            if 2 * length <= k:
                c, b, length, shift = c ^ (b << shift), c, k + 1 - length, 1
            else:
                c ^= b << shift
                shift += 1
        else:
            shift += 1
    if length != _DEG:  # cannot happen for a genuine MT19937
        raise RuntimeError(f"Berlekamp-Massey found degree {length}, expected {_DEG}")
    p = int(format(c, f"0{_DEG + 1}b")[::-1], 2)
    table = []
    for byte in range(256):
        high = byte << _DEG
        r = high
        for bit in range(_DEG + 7, _DEG - 1, -1):
            if (r >> bit) & 1:
                r ^= p << (bit - _DEG)
        table.append(high ^ r)
    return p, table


_SPREAD = np.array([sum(((i >> j) & 1) << (2 * j) for j in range(8)) for i in range(256)],
                   dtype="<u2")


def _poly_square(a: int) -> int:
    nbytes = (a.bit_length() + 7) // 8
    arr = np.frombuffer(a.to_bytes(nbytes, "little"), dtype=np.uint8)
    return int.from_bytes(_SPREAD[arr].tobytes(), "little")


def _poly_reduce(a: int, table: list[int]) -> int:
    while True:
        n = a.bit_length()
        if n <= _DEG:
            return a
        shift = max(n - _DEG - 8, 0)
        a ^= table[a >> (_DEG + shift)] << shift


def _x_pow_mod(n: int) -> int:
    """x**n mod P over GF(2)."""
    p, table = _char_poly()
    e, i = 0, n.bit_length() - 1
    while i >= 0 and ((e << 1) | ((n >> i) & 1)) < _DEG:  # small powers need no reduction
        e = (e << 1) | ((n >> i) & 1)
        i -= 1
    r = 1 << e
    while i >= 0:
        r = _poly_reduce(_poly_square(r), table)
        if (n >> i) & 1:
            r <<= 1
            if (r >> _DEG) & 1:
                r ^= p
        i -= 1
    return r


def advance(key: np.ndarray, pos: int, n: int) -> tuple[np.ndarray, int]:
    """The MT19937 state `n` outputs after (key, pos)."""
    if n < 1 << 20:  # stepping is cheaper than jumping
        bg = bitgen(key, pos)
        bg.random_raw(n, output=False)
        return get_state(bg)
    r = _x_pow_mod(n)
    # untempered words u[0 .. DEG + 623] from (key, pos): the state after i outputs is the
    # window u[i : i + 624], and the state after n outputs is sum_i r_i * window_i.
    u = _untemper(bitgen(key, pos).random_raw(_DEG + _N).astype(_U32))
    coeffs = np.frombuffer(r.to_bytes((_DEG + 8) // 8, "little"), dtype=np.uint8)
    idx = np.flatnonzero(np.unpackbits(coeffs, bitorder="little"))
    out = np.zeros(_N, dtype=_U32)
    cols = np.arange(_N)
    for lo in range(0, len(idx), 256):
        out ^= np.bitwise_xor.reduce(u[idx[lo:lo + 256, None] + cols], axis=0)
    return out, 0


def mt19937(seed: int) -> np.random.MT19937:
    """A numpy MT19937 in the state manual_seed(seed) leaves (the next output is the first)."""
    return bitgen(seed_key(int(seed)), _N)


def skip(bg: np.random.MT19937, n: int) -> np.random.MT19937:
    """A generator `n` outputs after `bg` (bg itself is left as it was)."""
    key, pos = advance(*get_state(bg), int(n)) if n > 0 else get_state(bg)
    return bitgen(key, pos)


__all__ = ["seed_key", "bitgen", "get_state", "advance", "mt19937", "skip"]
