"""Lambdas, closures and module globals of __main__, which multiprocessing cannot send."""
from distpool import Pool

OFFSET = 100


def make_adder(n):
    return lambda x: x + n + OFFSET


if __name__ == "__main__":
    with Pool(2) as pool:
        print(pool.map(lambda x: x * OFFSET, [1, 2]))
        print(pool.map(make_adder(5), [1, 2]))
