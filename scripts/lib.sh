# shellcheck shell=bash
# scripts/lib.sh — small helpers shared by the test-environment scripts.
#
# Sourced by scripts/garage-env, scripts/s3s-env, scripts/tls-proxy-env and
# scripts/test; it defines functions only and changes no shell options. Nothing here talks to
# the network except apt-get (Debian's package archive).

# say MESSAGE...: progress line on stderr, prefixed with the script's name.
say() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# die MESSAGE...: print an error on stderr and exit 1.
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# random_hex BYTES: print 2*BYTES lowercase hex digits from /dev/urandom.
random_hex() {
    head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'
}

# port_is_listening PORT: true when something accepts TCP on 127.0.0.1:PORT.
port_is_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pick_free_port [EXCLUDED_PORT...]: print a loopback TCP port nobody listens
# on. Ports come from 20000-29999, below Linux's ephemeral range, so outgoing
# connections do not grab them between the pick and the bind. The bind itself
# can still lose a race; callers retry the start with new ports.
pick_free_port() {
    local port excluded taken
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 10000))
        taken=0
        for excluded in "$@"; do
            if [[ "$port" == "$excluded" ]]; then
                taken=1
            fi
        done
        if [[ "$taken" == 0 ]] && ! port_is_listening "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1 in 20000-29999"
}

# s3_curl REGION KEY_ID SECRET CURL_ARGS...: curl with an AWS SigV4
# signature. curl (7.88 in Debian 12) does not send x-amz-content-sha256,
# which Garage requires, so we send UNSIGNED-PAYLOAD (curl signs it too).
s3_curl() {
    local region="$1" key_id="$2" secret="$3"
    shift 3
    curl --aws-sigv4 "aws:amz:$region:s3" --user "$key_id:$secret" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

# export_line NAME VALUE: print a shell-quoted `export NAME=VALUE` line.
export_line() {
    printf 'export %s=%q\n' "$1" "$2"
}

# now_ms: milliseconds since the epoch (for "ready in" timings).
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# pid_alive PIDFILE: true when PIDFILE names a running process.
pid_alive() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile PIDFILE NAME: TERM the process in PIDFILE, wait up to 10 s,
# then KILL it; remove PIDFILE. Quiet when nothing runs.
stop_pidfile() {
    local pidfile="$1" name="$2" pid
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# show_log_tail FILE: print the last 40 lines of FILE on stderr.
show_log_tail() {
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 40 "$1" >&2 2>/dev/null || printf '(no log written)\n' >&2
    printf -- '--- end of %s ---\n' "$1" >&2
}

# find_command NAME: print NAME's path, also looking in the sbin directories
# that are not on an unprivileged user's PATH. Fails when NAME is not found.
find_command() {
    local dir
    if command -v "$1" 2>/dev/null; then
        return 0
    fi
    for dir in /usr/sbin /sbin /usr/local/sbin; do
        if [[ -x "$dir/$1" ]]; then
            echo "$dir/$1"
            return 0
        fi
    done
    return 1
}

# as_root COMMAND...: run COMMAND as root, through sudo when we are not root.
as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run '$*' and sudo is not installed; install the packages by hand"
    fi
}

# ensure_packages COMMAND:PACKAGE...: install with apt-get each Debian PACKAGE
# whose COMMAND is missing. Services the packages ship are not started: a
# policy-rc.d that refuses them is put in place for the install when the
# machine has none (the Debian mechanism Docker images use).
ensure_packages() {
    local pair missing=() policy=/usr/sbin/policy-rc.d added_policy=0 status=0
    for pair in "$@"; do
        if ! find_command "${pair%%:*}" >/dev/null; then
            missing+=("${pair#*:}")
        fi
    done
    if [[ "${#missing[@]}" == 0 ]]; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ${missing[*]} and no apt-get to install them; install them by hand"
    say "installing Debian packages: ${missing[*]}"
    if [[ ! -e "$policy" ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || status=$?
    if [[ "$status" == 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null || status=$?
    fi
    if [[ "$added_policy" == 1 ]]; then
        as_root rm -f "$policy"
    fi
    [[ "$status" == 0 ]] || die "apt-get failed to install: ${missing[*]}"
}
