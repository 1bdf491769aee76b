// A layer-4 (TCP) proxy on Kestrel connection middleware and SpliceTransport.
//
//   dotnet run -c Release --project samples/TcpProxy -- --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--transport splice|sockets] [--capture DIR]
//
//   --listen ADDRESS:PORT        where clients connect (default 127.0.0.1:8080); unix:/path for a Unix socket
//   --upstream ADDRESS:PORT      where each connection is forwarded (required); HOST:PORT or unix:/path too
//   --transport splice|sockets   splice (default) or Kestrel's own socket transport, for side-by-side comparison
//   --capture DIR                write each connection's bytes to DIR/<connection id>.c2s (client to upstream) and
//                                DIR/<connection id>.s2c (upstream to client); DIR is created if its parent exists.
//                                Splice transport only (tee(2) through its kernel pipes). Lossy by design, it never
//                                slows the forward: bytes the disk could not keep up with are left out of the file
//                                and their ranges listed in FILE.gaps, one "offset length" line each (stream offsets;
//                                no .gaps file: the capture is complete)
//
// Each connection gets its own upstream connection (on SpliceTransport, on the same event loop), and ForwardAsync
// moves bytes both ways until both directions end; one log line per connection says what moved (with --capture,
// also what each capture kept and dropped, and where). An upstream that refuses or cannot be reached closes the
// client at once. Ctrl-C stops forwarding and closes every connection.
namespace TcpProxy;

public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        WebApplication app;
        try
        {
            app = ProxyApp.Build(args);
        }
        catch (ArgumentException ex)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine("usage: TcpProxy --listen ADDRESS:PORT --upstream ADDRESS:PORT [--transport splice|sockets] [--capture DIR]\n" +
                "  --capture DIR: DIR/<connection id>.c2s and .s2c, each direction's bytes (splice transport only);\n" +
                "  DIR is created if its parent exists; ranges the disk could not keep up with are listed in FILE.gaps");
            return 2;
        }
        await app.RunAsync();
        return 0;
    }
}
