"""Collects the ids of `order.created` events: an exclusive queue bound to the durable `orders`
exchange (routing key `created_order`) before any load, drained in a thread of its own."""

import threading
import time
import uuid


class EventCollector(threading.Thread):
    def __init__(self, amqp_url):
        super().__init__(daemon=True)
        self.amqp_url = amqp_url
        self.ids, self.deliveries = set(), 0
        self.first_seen, self.times_seen = {}, {}  # message id → time.time() of its first delivery; → deliveries
        self.ready, self._halt, self.error = threading.Event(), threading.Event(), None

    def run(self):
        try:
            import pika
        except ImportError:
            self.error = "pika is not installed (pip install -r chaos/experiments/requirements.txt)"
            self.ready.set()
            return
        # A named queue that outlives a broker restart (a real outage); it expires 10 min after
        # its last consumer left, and is deleted at the end.
        queue = f"chaos-experiments-{uuid.uuid4().hex[:12]}"
        conn = None
        while not self._halt.is_set():
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
                ch = conn.channel()
                ch.exchange_declare("orders", exchange_type="topic", durable=True)
                ch.queue_declare(queue, durable=True, arguments={"x-expires": 600_000})
                ch.queue_bind(queue, "orders", routing_key="created_order")

                def on_message(_ch, _method, props, _body):
                    self.deliveries += 1
                    if props.message_id:
                        self.ids.add(props.message_id)
                        self.first_seen.setdefault(props.message_id, time.time())
                        self.times_seen[props.message_id] = self.times_seen.get(props.message_id, 0) + 1

                ch.basic_consume(queue, on_message, auto_ack=True)
                self.ready.set()
                while not self._halt.is_set():
                    conn.process_data_events(time_limit=0.2)
                ch.queue_delete(queue)
                conn.close()
                return
            except Exception as e:  # the broker went away: reconnect; reported if never ready
                self.error = None if self.ready.is_set() else f"{type(e).__name__}: {e}"
                if not self.ready.is_set():
                    self.ready.set()
                    return
                self._halt.wait(0.5)

    def stop(self):
        self._halt.set()
        self.join(5)
