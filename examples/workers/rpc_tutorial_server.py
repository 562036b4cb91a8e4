"""A backend written exactly as in RabbitMQ's RPC tutorial (pika), with no gateway code:
it consumes the operation's queue and replies to `reply_to` with the `correlation_id`.

    python examples/workers/rpc_tutorial_server.py [QUEUE]   # default math.add
"""

import json
import os
import sys

import pika

url = os.environ.get("GATEWAY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5673/")
queue = sys.argv[1] if len(sys.argv) > 1 else "math.add"

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue, passive=True)  # the gateway owns the queue


def on_request(ch, method, props, body):
    numbers = json.loads(body)
    response = {"sum": numbers["a"] + numbers["b"]}
    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id),
        body=json.dumps(response),
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue=queue, on_message_callback=on_request)
print(" [x] Awaiting RPC requests", flush=True)
channel.start_consuming()
