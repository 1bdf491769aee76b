// A layer-4 (TCP) proxy on Kestrel connection middleware and SpliceTransport.
//
//   dotnet run -c Release --project samples/TcpProxy -- --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--transport splice|sockets]
//
//   --listen ADDRESS:PORT        where clients connect (default 127.0.0.1:8080); unix:/path for a Unix socket
//   --upstream ADDRESS:PORT      where each connection is forwarded (required); HOST:PORT or unix:/path too
//   --transport splice|sockets   splice (default) or Kestrel's own socket transport, for side-by-side comparison
//
// Each connection gets its own upstream connection (on SpliceTransport, on the same event loop), and ForwardAsync
// moves bytes both ways until both directions end; one log line per connection says what moved. An upstream that
// refuses or cannot be reached closes the client at once. Ctrl-C stops forwarding and closes every connection.
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
            Console.Error.WriteLine("usage: TcpProxy --listen ADDRESS:PORT --upstream ADDRESS:PORT [--transport splice|sockets]");
            return 2;
        }
        await app.RunAsync();
        return 0;
    }
}
