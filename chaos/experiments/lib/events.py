"""Collects the ids of `order.created` events: an exclusive queue bound to the durable `orders`
exchange (routing key `created_order`) before any load, drained in a thread of its own."""

import threading


class EventCollector(threading.Thread):
    def __init__(self, amqp_url):
        super().__init__(daemon=True)
        self.amqp_url = amqp_url
        self.ids, self.deliveries = set(), 0
        self.ready, self._halt, self.error = threading.Event(), threading.Event(), None

    def run(self):
        try:
            import pika
        except ImportError:
            self.error = "pika is not installed (pip install -r chaos/experiments/requirements.txt)"
            self.ready.set()
            return
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            ch = conn.channel()
            ch.exchange_declare("orders", exchange_type="topic", durable=True)
            queue = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            ch.queue_bind(queue, "orders", routing_key="created_order")

            def on_message(_ch, _method, props, _body):
                self.deliveries += 1
                if props.message_id:
                    self.ids.add(props.message_id)

            ch.basic_consume(queue, on_message, auto_ack=True)
            self.ready.set()
            while not self._halt.is_set():
                conn.process_data_events(time_limit=0.2)
            conn.close()
        except Exception as e:  # reported as a failed check, never a crash of the runner
            self.error = f"{type(e).__name__}: {e}"
            self.ready.set()

    def stop(self):
        self._halt.set()
        self.join(5)
