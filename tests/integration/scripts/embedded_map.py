"""A map on the embedded default cluster; prints the result."""
import distpool


def square(x):
    return x * x


if __name__ == "__main__":
    with distpool.Pool(2) as pool:
        print(pool.map(square, range(6)))
