"""The 64-bit hashes Envoy's consistent hashing uses, so pilotfish maps keys to hosts as Envoy.

``xxhash64`` is xxHash64 from the ``xxhash`` package (Envoy: ``HashUtil::xxHash64``, the hash of
request keys, ring entries and Maglev permutations). ``murmur_hash2_64`` is the ring's
``MURMUR_HASH_2`` hash function: Envoy's ``MurmurHash::murmurHash2``, the 64-bit MurmurHash2
variant of libstdc++'s ``_Hash_bytes`` (``std::hash<std::string>``). No package provides that
variant (it mixes each 8-byte block with a shift before the multiply, unlike MurmurHash64A),
so it is written here.
"""

from __future__ import annotations

from xxhash import xxh64_intdigest

_MASK64 = (1 << 64) - 1
_MUL = 0xC6A4A7935BD1E995
STD_HASH_SEED = 0xC70F6907


def xxhash64(data: bytes, seed: int = 0) -> int:
    return xxh64_intdigest(data, seed)


def murmur_hash2_64(data: bytes, seed: int = STD_HASH_SEED) -> int:
    n = len(data)
    aligned = n & ~7
    h = (seed ^ (n * _MUL)) & _MASK64
    for i in range(0, aligned, 8):
        k = (int.from_bytes(data[i : i + 8], "little") * _MUL) & _MASK64
        k = ((k ^ (k >> 47)) * _MUL) & _MASK64
        h = ((h ^ k) * _MUL) & _MASK64
    if n & 7:
        h = ((h ^ int.from_bytes(data[aligned:], "little")) * _MUL) & _MASK64
    h = ((h ^ (h >> 47)) * _MUL) & _MASK64
    return h ^ (h >> 47)
