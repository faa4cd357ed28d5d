# Source me (bash or zsh) to run CodeAlign nodes and tools from this checkout:
#   . ./env.sh
# Activates .venv (ROS 2 Kilted wheels, PyTorch, ONNX Runtime) and overlays install/
# (codealign_msgs, codealign_ros built by `make setup`).
if [ -n "${BASH_SOURCE:-}" ]; then _ca_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
elif [ -n "${ZSH_VERSION:-}" ]; then _ca_root=$(cd "$(dirname "${(%):-%x}")" && pwd)
else _ca_root=$(pwd); fi
if [ ! -x "$_ca_root/.venv/bin/python" ] || [ ! -f "$_ca_root/install/setup.sh" ]; then
    echo "env.sh: run 'make setup' in $_ca_root first" >&2
    unset _ca_root
    return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$_ca_root/.venv/bin/activate"
COLCON_CURRENT_PREFIX="$_ca_root/install" . "$_ca_root/install/setup.sh"
export AMENT_PREFIX_PATH="$_ca_root/install:$VIRTUAL_ENV"
export CMAKE_PREFIX_PATH="$_ca_root/install:$VIRTUAL_ENV"
export PYTHONPATH="$_ca_root${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$_ca_root/install/lib/codealign_ros:$PATH"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Fast DDS with a 16 MiB shared-memory segment (config/fastdds.xml); a profile of your own wins.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_ca_root/config/fastdds.xml}"
unset _ca_root
