"""Task results, with Dramatiq's names:

from broker.results import Results, ResultMissing, ResultTimeout, ResultFailure
from broker.results.backends import RedisBackend, StubBackend

broker.add_middleware(Results(backend=RedisBackend(url="redis://127.0.0.1:6379/0")))

@actor(store_results=True)
def add(x, y):
    return x + y

add.send(1, 2).get_result(block=True, timeout=5_000)   # -> 3
"""

from broker.results.backend import ResultBackend
from broker.results.errors import ResultError, ResultFailure, ResultMissing, ResultTimeout
from broker.results.middleware import Results

__all__ = ["ResultBackend", "ResultError", "ResultFailure", "ResultMissing", "ResultTimeout", "Results"]
