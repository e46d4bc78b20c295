"""How much receive buffer one datagram costs at the receiving workload over
plain veth and over weave (skmem r / datagrams, with the socket not read).

    sudo WVB_BIN=target/release python3 bench/udp_truesize.py
"""
import os, sys, time, re, subprocess, signal
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("WVB_PREFIX", f"wvt{os.getpid()}")
import dataplane as d
RECV = r'''
import socket,sys,time,subprocess
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4<<20)
s.bind((sys.argv[1],5301)); print("ready",flush=True)
sys.stdin.readline()
out=subprocess.run(["ss","-uamnH","sport = :5301"],capture_output=True,text=True).stdout
s.setblocking(False); n=0
while True:
    try: s.recv(65536); n+=1
    except BlockingIOError: break
print(n, out.replace("\n"," "),flush=True)
'''
SEND = r'''
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
b=b"x"*int(sys.argv[3])
for i in range(int(sys.argv[2])): s.sendto(b,(sys.argv[1],5301))
'''
def main():
    os.makedirs(d.DIR, exist_ok=True)
    u = d.underlay()
    paths = {"veth": d.setup_veth(u), "weave": d.setup_weave(u)}
    for rnd in range(2):
      for k, p in paths.items():
        for n in (20, 200):
            r = subprocess.Popen(["ip","netns","exec",p.server_ns,"python3","-c",RECV,p.server_ip],stdin=subprocess.PIPE,stdout=subprocess.PIPE,text=True)
            r.stdout.readline()
            d.ns_run(p.client_ns, ["python3","-c",SEND,p.server_ip,str(n),str(p.mtu-28)])
            time.sleep(0.5)
            r.stdin.write("\n"); r.stdin.flush()
            line = r.stdout.readline().strip(); r.wait()
            got = int(line.split()[0]); m = re.search(r"skmem:\(r(\d+)", line)
            rm = int(m.group(1)) if m else 0
            print(f"{k:6} sent {n} got {got} rmem_alloc {rm} per datagram {rm/max(got,1):.0f}  {line[:200]}", flush=True)
try:
    main()
finally:
    d.cleanup()
