"""Every test process sees 8 simulated CPU devices; single-device tests pick the first one."""
import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent XLA compilation cache for the run and the processes its tests start: the many
# subprocess runs of the same tiny config compile their step once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.pytest_cache', 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
