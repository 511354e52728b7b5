import socket, sys
mode=sys.argv[1]
if mode=="srv":  # srv host port  (tcp echo, forever, + udp echo thread)
    import threading
    h,p=sys.argv[2],int(sys.argv[3])
    def udp():
        u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind((h,p))
        while True:
            d,a=u.recvfrom(100); u.sendto(d,a)
    threading.Thread(target=udp,daemon=True).start()
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind((h,p)); s.listen()
    while True:
        c,a=s.accept()
        def serve(c):
            while True:
                d=c.recv(100)
                if not d: break
                c.sendall(d)
        threading.Thread(target=serve,args=(c,),daemon=True).start()
elif mode=="tcp":
    h,p=sys.argv[2],int(sys.argv[3])
    try:
        s=socket.create_connection((h,p),timeout=1.5); s.sendall(b"hi"); print("tcp ok", s.recv(10))
    except Exception as e: print("tcp FAIL", e)
elif mode=="udp":
    h,p=sys.argv[2],int(sys.argv[3])
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(1.5)
    try:
        u.sendto(b"hi",(h,p)); print("udp ok", u.recvfrom(10)[0])
    except Exception as e: print("udp FAIL", e)
