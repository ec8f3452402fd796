"""What distpool needs of the broker, one place per kind of broker.

* :mod:`.celery_app`: the Celery app configuration that clients and workers share.
* :mod:`.redis_transport` and :mod:`.held_messages`: kombu's Redis transport as distpool
  uses it, taking messages by an atomic move into a held list of the consumer's own;
  :mod:`.redis_qos`, its record of what a consumer was delivered and has not acknowledged;
  :mod:`.redis_connections`, the command connections its channels share;
  :mod:`.redis_poller`, its poller, which an acknowledgement wakes (Celery's blocking loop,
  the one it runs on Windows, would otherwise sleep before taking the next message).
"""
