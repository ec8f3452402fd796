"""distpool first, then multiprocessing in the same process: the child must not hang."""
import multiprocessing
import sys

import distpool


def square(x):
    return x * x


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    with distpool.Pool(2) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        with multiprocessing.Pool(2) as mp_pool:  # forked while distpool's threads run
            assert mp_pool.map(square, range(10)) == [x * x for x in range(10)]
            mp_pool.close()
            mp_pool.join()
        assert pool.apply(square, (3,)) == 9
    print("ok")
    sys.exit(0)
