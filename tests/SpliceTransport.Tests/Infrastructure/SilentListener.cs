using System.Net;
using System.Net.Sockets;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// A listener whose accept queue is full and never drained: Linux drops further SYNs, so a connect to it neither
/// succeeds nor fails until the client gives up (its first SYN retransmit is a second away).
/// </summary>
internal sealed class SilentListener : IDisposable
{
    private readonly Socket _listener;
    private readonly List<Socket> _queued = [];

    private SilentListener()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(0); // Room for one connection in the accept queue.
        EndPoint = (IPEndPoint)_listener.LocalEndPoint!;
    }

    public IPEndPoint EndPoint { get; }

    public static SilentListener Start()
    {
        var silent = new SilentListener();
        // Fill the queue: this connection completes and waits to be accepted, and the kernel drops the SYNs of
        // the next ones (the queue is full when it holds more than the backlog).
        var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        silent._queued.Add(filler);
        filler.Connect(silent.EndPoint);
        return silent;
    }

    public void Dispose()
    {
        foreach (Socket socket in _queued)
        {
            socket.Dispose();
        }
        _listener.Dispose();
    }
}
