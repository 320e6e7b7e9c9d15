"""Small number-theory helpers: primality, factorisation, sieves."""

import math
from functools import lru_cache


def is_prime(n):
    """Return True if n is a prime number."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    limit = int(math.isqrt(n))
    for k in range(3, limit + 1, 2):
        if n % k == 0:
            return False
    return True


def factorize(n):
    """Prime factors of n, smallest first, with repetition.

    >>> factorize(12)
    [2, 2, 3]
    """
    factors = []
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors


def sieve(limit):
    """All primes below ``limit`` (sieve of Eratosthenes)."""
    if limit < 3:
        return []
    flags = [True] * limit
    flags[0] = flags[1] = False
    for i in range(2, int(limit**0.5) + 1):
        if flags[i]:
            # every multiple of i from i*i on is composite
            for j in range(i * i, limit, i):
                flags[j] = False
    return [i for i, ok in enumerate(flags) if ok]


@lru_cache(maxsize=None)
def nth_prime(n):
    """The n-th prime, counting from 1."""
    count, candidate = 0, 1
    while count < n:
        candidate += 1
        if is_prime(candidate):
            count += 1
    return candidate


def gcd(a, b):
    while b:
        a, b = b, a % b
    return abs(a)


def lcm(a, b):
    return a // gcd(a, b) * b if a and b else 0


class PrimeCache:
    """Remembers which numbers were found to be prime."""

    def __init__(self):
        self.known = {}

    def check(self, n):
        if n not in self.known:
            self.known[n] = is_prime(n)
        return self.known[n]

    def primes_seen(self):
        return sorted(n for n, ok in self.known.items() if ok)


if __name__ == "__main__":
    cache = PrimeCache()
    for value in (2, 15, 17, 91, 97):
        print(value, cache.check(value), factorize(value))
    print(sieve(50))
