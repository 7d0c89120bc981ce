//! A rumqttc (MQTT 3.1.1) client for the tests: its CONNACK's session-present flag, and what
//! it receives on channels (its event loop acknowledges QoS 1 deliveries itself).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for anything.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// A connected client.
pub(crate) struct Client {
    pub(crate) client: AsyncClient,
    pub(crate) session_present: bool,
    pub(crate) publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    /// One item per SUBACK or PUBACK.
    pub(crate) acks: mpsc::UnboundedReceiver<()>,
    /// One item when the connection ends.
    pub(crate) ended: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Connects `id` to `port` and waits for the CONNACK.
pub(crate) async fn client(id: &str, port: u16, clean: bool) -> Client {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    timeout(DEADLINE, connect(o))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK accepting the client")
}

/// One connection attempt: the client if a CONNACK accepted it.
pub(crate) async fn connect(o: MqttOptions) -> Option<Client> {
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (ptx, publishes) = mpsc::unbounded_channel();
    let (atx, acks) = mpsc::unbounded_channel();
    let (etx, ended) = mpsc::unbounded_channel();
    let (ctx, mut connack) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = ptx.send(p);
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    let _ = ctx.send(c.session_present);
                }
                Ok(Event::Incoming(Packet::SubAck(_) | Packet::PubAck(_))) => {
                    let _ = atx.send(());
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = etx.send(());
                    return;
                }
            }
        }
    });
    let session_present = connack.recv().await?;
    Some(Client {
        client,
        session_present,
        publishes,
        acks,
        ended,
        task,
    })
}

impl Client {
    /// Waits for the next SUBACK or PUBACK.
    pub(crate) async fn acked(&mut self) {
        timeout(DEADLINE, self.acks.recv())
            .await
            .expect("acknowledged in time")
            .expect("client running");
    }

    /// Waits for the next publish.
    pub(crate) async fn next(&mut self) -> rumqttc::Publish {
        timeout(DEADLINE, self.publishes.recv())
            .await
            .expect("a message in time")
            .expect("client running")
    }

    /// Subscribes and waits for the SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.acked().await;
    }

    /// Publishes, waiting for the PUBACK of QoS 1.
    pub(crate) async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.to_string())
            .await
            .expect("publish");
        if qos != QoS::AtMostOnce {
            self.acked().await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}
