"""The MQTT protocol layer that the node and the fleet tools both sit on.

* :mod:`.link`: one paho-mqtt client (reconnects, MQTT 5 with 3.1.1 fallback,
  manual acknowledgements); :mod:`.pump` drains a durable store of rows
  (:mod:`.rows`) through it; :mod:`.handshake` decides the MQTT version and
  words the broker's refusals; :mod:`.capabilities` probes what the broker does;
* :mod:`.scheme`: what a link asks of its topic scheme (will, how a row
  leaves, births, goodbye); the node's JSON and Sparkplug schemes implement it;
* :mod:`.topics`: the JSON scheme's topics and envelopes, topic checks, JSON limits;
* :mod:`.transfer`: model bundles offered and sent in chunks;
* :mod:`.config`: where and how to connect (:class:`BrokerConfig`);
* :mod:`.sparkplug`: the Sparkplug B codec, topic and metric names, the host view.

It imports neither the node nor the fleet; paho-mqtt loads when a link is made.
"""

from .config import BrokerConfig

__all__ = ["BrokerConfig"]
