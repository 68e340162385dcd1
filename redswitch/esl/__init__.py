"""The ESL client side: request/response connections (greenswitch) and the listener's event stream."""
