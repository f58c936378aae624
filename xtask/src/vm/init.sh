#!/usr/bin/busybox sh
# PID 1 of overlay-bpf's test VMs, written into the initramfs by `cargo xtask`.
#
# Mounts what overlay-bpf and the tools need, loads the modules listed in
# /etc/obvm/modules, gives eth0 the address on the kernel command line
# (ob.ip=, ob.host=), then runs the steps the host sends over the serial
# console: one line "<n> <shell command>" per step. Every step ends with one
# line the host waits for:
#
#   OBVM-<token> RESULT <n> PASS
#   OBVM-<token> RESULT <n> FAIL exit=<status>
#
# <token> comes from the command line (ob.token=), so no output of a step can
# be taken for a result.

export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/usr/libexec/busybox
export HOME=/root
umask 022
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ob.*=*) k=${arg%%=*}; k=${k#ob.}; eval "ob_$k=\${arg#*=}" ;;
    esac
done
say() { echo "OBVM-$ob_token $*"; }
stty -echo 2>/dev/null

if [ -n "$ob_probe" ]; then
    say READY "$(uname -r)"
    poweroff -f
fi

while read -r m; do
    insmod "/lib/modules/obvm/$m.ko" || say FATAL "insmod $m failed"
done </etc/obvm/modules

hostname "${ob_host:-guest}"
ip link set lo up
if [ -n "$ob_ip" ]; then
    ip link set eth0 up
    ip addr add "$ob_ip" dev eth0
fi

# Helpers for the steps.

# mkns NAME...: named network namespaces under /run/netns, as `ip netns add`.
mkns() {
    mkdir -p /run/netns
    for n in "$@"; do
        touch "/run/netns/$n" && unshare --net="/run/netns/$n" true &&
            nsenter --net="/run/netns/$n" ip link set lo up || return 1
    done
}

# inns NAME CMD...: CMD inside namespace NAME.
inns() {
    n=$1
    shift
    nsenter --net="/run/netns/$n" "$@"
}

# serve NETNS LABEL: an HTTP server on :80 in NETNS answering every request
# with "LABEL saw <the client address it saw>" (as IPv4, without the
# "[::ffff:...]" of httpd's dual-stack socket). Once per namespace: a second
# call finds it serving.
serve() {
    [ -e "/tmp/www-$1/.serving" ] && return 0
    d=/tmp/www-$1
    mkdir -p "$d/cgi-bin"
    cat >"$d/cgi-bin/index.cgi" <<EOF
#!/usr/bin/busybox sh
a=\${REMOTE_ADDR#\[::ffff:}
echo "Content-Type: text/plain"
echo
echo "$2 saw \${a%]}"
EOF
    chmod +x "$d/cgi-bin/index.cgi"
    inns "$1" httpd -p 80 -h "$d" && touch "$d/.serving"
}

# get NETNS URL: the body, or a failure after 5 s (timeout, because busybox
# 1.35's own `wget -T` crashes).
get() {
    inns "$1" timeout 5 wget -q -O - "$2"
}

# pings NETNS IP WANT [NETNS IP WANT]...: pings all at once, prints
# "PING <netns> <ip> got=<ok|blocked> want=<WANT>" for each, and fails when
# any outcome is not the wanted one.
pings() {
    pids=""
    while [ $# -ge 3 ]; do
        (
            if inns "$1" ping -c 2 -W 2 "$2" >/dev/null 2>&1; then got=ok; else got=blocked; fi
            echo "PING $1 $2 got=$got want=$3"
            [ "$got" = "$3" ]
        ) &
        pids="$pids $!"
        shift 3
    done
    rc=0
    for p in $pids; do wait "$p" || rc=1; done
    return $rc
}

say READY "$(uname -r)"

while IFS= read -r line; do
    n=${line%% *}
    cmd=${line#* }
    (eval "$cmd") </dev/null 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then say RESULT "$n" PASS; else say RESULT "$n" FAIL "exit=$rc"; fi
done
poweroff -f
