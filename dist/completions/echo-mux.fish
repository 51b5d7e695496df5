complete -c echo-mux -s l -l listen -d 'Listen on HOST:PORT, [V6ADDR]:PORT, unix:/path or udp:HOST:PORT (repeatable) [default: 127.0.0.1:50007]' -r -f
complete -c echo-mux -s b -l backend -d 'Readiness backend: epoll, poll, select or auto' -r -f -a "epoll\t'the kernel keeps the set; the default on Linux'
poll\t'one pollfd array, scanned on every wait'
select\t'fd_set pair; descriptors below 1024 only'
auto\t'epoll on Linux, poll elsewhere'"
complete -c echo-mux -l mode -d 'raw: echo every byte unchanged; stamp: answer each line with "Echo=><line> at <ctime>"' -r -f -a "raw\t'every byte echoed back unchanged'
stamp\t'each line answered with a time stamp'"
complete -c echo-mux -l delay -d 'Hold every reply for DUR after its data arrived' -r -f
complete -c echo-mux -l max-clients -d 'Connections beyond N open at once (per worker with --workers) are accepted and closed at once' -r -f
complete -c echo-mux -l max-buffer -d 'Cap on one connection\'s pending output; reading pauses at the cap' -r -f
complete -c echo-mux -l idle-timeout -d 'Close a connection with no traffic either way for DUR; 0 = never' -r -f
complete -c echo-mux -l shutdown-timeout -d 'Longest graceful drain on SIGTERM/SIGINT; 0 = close everything at once' -r -f
complete -c echo-mux -l allow -d 'Serve peers in CIDR (repeatable); the longest matching prefix decides, a tie denies; with any --allow, a peer that matches nothing is refused' -r -f
complete -c echo-mux -l deny -d 'Refuse peers in CIDR (repeatable): connections closed at once, datagrams dropped' -r -f
complete -c echo-mux -l allow-file -d 'Serve peers in the CIDRs listed in PATH (repeatable), as --allow: one per line, # comments' -r -F
complete -c echo-mux -l deny-file -d 'Refuse peers in the CIDRs listed in PATH (repeatable), as --deny: one per line, # comments' -r -F
complete -c echo-mux -l max-per-source -d 'TCP connections open at once from one source (IPv4 address or IPv6 /64); 0 = no limit' -r -f
complete -c echo-mux -l rate-per-source -d 'New TCP connections and UDP datagrams per second from one source (burst N); 0 = no limit' -r -f
complete -c echo-mux -l source-table -d 'Sources the per-source table has room for; when full, entries with no open connection are evicted, least recently seen first [default: max(65536, max-clients × workers)]' -r
complete -c echo-mux -l keepalive -d 'TCP keepalive: first probe after DUR of silence, then 3 probes 10 s apart; 0 = off' -r -f
complete -c echo-mux -l proxy-from -d 'TCP peers in CIDR (repeatable, e.g. a load balancer) must begin each connection with a PROXY protocol header (v1 or v2); the client it names is the source for everything' -r -f
complete -c echo-mux -l socket-mode -d 'Octal permissions of unix socket files echo-mux creates, e.g. 0660 [default: umask]' -r -f
complete -c echo-mux -l workers -d 'Worker processes, each its own reactor, under a supervisor; auto = CPUs this process may run on' -r -f -a "auto\t'one worker per CPU this process may run on'"
complete -c echo-mux -l udp-loop-detect -d 'UDP: stop answering a source that keeps sending our replies back (an echo loop): on or off' -r -f -a "on\t'detect echo loops'
off\t'answer every datagram'"
complete -c echo-mux -l pid-file -d 'Write the pid (the supervisor\'s with --workers) to PATH once listening; removed at exit' -r -F
complete -c echo-mux -l user -d 'After binding every listener, switch to USER (name or uid) and its primary group, supplementary groups dropped (needs root; a port below 1024 stays bound)' -r -f -a "(__fish_complete_users)"
complete -c echo-mux -l group -d 'After binding, switch to GROUP (name or gid) instead of the user\'s primary group; alone, only the group changes' -r -f
complete -c echo-mux -l log-format -d 'Log line format: text, or json (one object per line: ts, level, msg, fields)' -r -f -a "text\t'[timestamp LEVEL] message; <N>message when stderr is the journal'
json\t'one JSON object per line: ts, level, msg and the line\'s fields'"
complete -c echo-mux -l metrics -d 'Serve /metrics (Prometheus text) and /status (JSON) over HTTP on HOST:PORT or unix:/path' -r -f
complete -c echo-mux -l log-connections -d 'One info line per closed connection: peer, duration, bytes in and out, reason'
complete -c echo-mux -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c echo-mux -s q -l quiet -d 'Less logging (-q warn, -qq error)'
complete -c echo-mux -s h -l help -d 'Print help'
complete -c echo-mux -s V -l version -d 'Print version'
