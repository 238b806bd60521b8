"""Protocol adapters: turn events (tether.engine.events) rendered in a wire format."""
