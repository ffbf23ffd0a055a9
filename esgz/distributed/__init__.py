"""Beyond one machine: a conversion cache in a registry, and batch runs on Celery workers.

- :mod:`esgz.distributed.regcache`: the conversion cache kept in a registry repository
  (``cache: {registry: HOST/REPO}``); needs nothing but a registry.
- :mod:`esgz.distributed.worker` / :mod:`esgz.distributed.executor`: ``esgz worker`` and
  ``esgz run --broker`` on Celery 5 with Redis (``pip install 'esgz[celery]'``).
"""
