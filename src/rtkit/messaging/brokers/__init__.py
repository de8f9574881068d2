"""Message brokers: the protocol (``base``), in process (``memory``), RabbitMQ (``amqp``)."""
