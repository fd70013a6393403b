"""What a compiled step holds in device memory."""
import jax


def memory(compiled: jax.stages.Compiled) -> dict:
    """XLA's plan for the executable (arguments + outputs + temporaries, less donated buffers), and the
    device's own peak where the backend reports one (GPU, TPU; not CPU)."""
    plan = compiled.memory_analysis()
    planned = plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes \
        - plan.alias_size_in_bytes
    stats = jax.local_devices()[0].memory_stats() or {}
    return {"planned_bytes": int(planned), "temp_bytes": int(plan.temp_size_in_bytes),
            "device_peak_bytes": stats.get("peak_bytes_in_use")}
