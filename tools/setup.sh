#!/usr/bin/env bash
# Idempotent, cached workspace setup: .venv from requirements.lock, then colcon build
# of codealign_msgs and codealign_ros into install/ (plus the fallback interfaces/tf2_msgs
# where the environment has no tf2_msgs). Re-runs only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=$ROOT/.venv
LOCK=$ROOT/requirements.lock

say() { printf '[setup] %s\n' "$*"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

venv_key=$(digest "$LOCK" tools/fix_ros_wheel_prefix.py)
if [[ ! -f $VENV/.codealign-key || $(cat "$VENV/.codealign-key") != "$venv_key" ]]; then
    start=$SECONDS
    say "creating virtualenv $VENV from requirements.lock"
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$LOCK"
    "$VENV/bin/python" tools/fix_ros_wheel_prefix.py "$VENV"
    echo "$venv_key" > "$VENV/.codealign-key"
    say "virtualenv ready in $((SECONDS - start)) s"
else
    say "virtualenv up to date"
fi

# tf2_msgs: a full ROS 2 install (or the venv) provides it; else build interfaces/tf2_msgs.
have_tf2_msgs() {
    local prefix
    for prefix in "$VENV" ${AMENT_PREFIX_PATH:+${AMENT_PREFIX_PATH//:/ }}; do
        [[ $prefix == "$ROOT/install" ]] && continue
        [[ -f $prefix/share/ament_index/resource_index/packages/tf2_msgs ]] && return 0
    done
    return 1
}
packages=(codealign_msgs)
if have_tf2_msgs; then
    tf2_source=installed
else
    tf2_source=fallback
    packages+=(interfaces/tf2_msgs)
fi
build_inputs=$(find codealign_msgs interfaces setup.py setup.cfg package.xml resource -type f | sort)
# names of the installed data files (setup.py data_files): a new weight or config file needs a
# rebuild to appear in the install's share directory (contents are symlinked)
shipped=$(ls config models/mini/*.pt models/mini/*.md 2>/dev/null | tr '\n' ' ')
build_key=$(echo "tf2_msgs=$tf2_source $shipped" | cat - $build_inputs "$VENV/.codealign-key" \
    | sha256sum | cut -d' ' -f1)
if [[ ! -f install/.codealign-key || $(cat install/.codealign-key) != "$build_key" ]]; then
    start=$SECONDS
    say "building ${packages[*]} and codealign_ros with colcon (tf2_msgs: $tf2_source)"
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
    rm -rf build/codealign_msgs build/codealign_ros build/tf2_msgs
    if [[ $tf2_source == installed && -d install/share/tf2_msgs ]]; then
        # our fallback from an earlier build would shadow the installed tf2_msgs: start afresh
        say "removing the fallback tf2_msgs from install/ (an installed tf2_msgs exists now)"
        rm -rf install
    fi
    mkdir -p log
    if ! colcon --log-base log build --symlink-install --merge-install \
            --base-paths . "${packages[@]}" \
            --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" > "$ROOT/log/colcon-build.txt" 2>&1 \
            < /dev/null; then
        tail -n 60 log/colcon-build.txt
        say "colcon build failed; full log in log/colcon-build.txt"
        exit 1
    fi
    echo "$build_key" > install/.codealign-key
    say "workspace built in $((SECONDS - start)) s"
else
    say "workspace up to date"
fi
