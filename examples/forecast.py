"""A job written for multiprocessing.Pool, shaped like our users' outage forecast.

Task objects with an execute() method, a simulator case opened by the initializer and used
by every task, module globals, and a callback: only the import below differs from the
multiprocessing version. The tests run both versions and compare their output.
"""
import math
import time

from distpool import Pool  # was: from multiprocessing import Pool

SEASON_FACTOR = 1.5
case = None


def open_case(path):
    global case
    case = {"path": path, "buses": 118}


def outage_probability(load, hour):
    return round(min(1.0, load / 1000 * SEASON_FACTOR * (1 + math.sin(hour))), 6)


class TaskResult:
    def __init__(self, index, probability, buses):
        self.index, self.probability, self.buses = index, probability, buses

    def __repr__(self):
        return f"TaskResult({self.index}, {self.probability}, buses={self.buses})"


class OutageTask:
    def __init__(self, index, load):
        self.index, self.load = index, load

    def execute(self):
        time.sleep(0.01 * (self.index % 3))  # uneven durations
        return TaskResult(self.index, outage_probability(self.load, self.index), case["buses"])


def run(task):
    return task.execute()


if __name__ == "__main__":
    tasks = [OutageTask(i, 100 + 37 * i) for i in range(24)]
    seen = []
    with Pool(2, initializer=open_case, initargs=("grid.sav",)) as pool:
        async_result = pool.map_async(run, tasks, callback=lambda rs: seen.append(len(rs)))
        results = async_result.get(timeout=120)
        for result in results:
            print(result)
        print("same class:", all(type(r) is TaskResult for r in results))
        print("callback saw", seen)
        print("apply:", pool.apply(outage_probability, (500, 3)))
        unordered = sorted(pool.imap_unordered(run, tasks[:6]), key=lambda r: r.index)
        print("imap_unordered:", unordered)
        print("starmap:", pool.starmap(outage_probability, [(200, 1), (300, 2)]))
