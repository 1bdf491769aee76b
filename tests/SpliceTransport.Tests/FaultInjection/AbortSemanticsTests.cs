using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// How a connection ends, seen through the seam: HttpContext.Abort() makes exactly one SO_LINGER-0 close
/// (a reset, with no FIN before it), and a graceful "Connection: close" makes none (a FIN, then a clean EOF).
/// </summary>
public class AbortSemanticsTests
{
    private static Task<SpliceTestHost> StartAsync(FaultInjectingSyscalls syscalls) => FaultKit.StartAsync(syscalls, app =>
    {
        app.MapGet("/plaintext", () => "Hello, World!");
        app.MapGet("/abort", (HttpContext context) => context.Abort());
        app.MapGet("/abort-mid-body", async (HttpContext context) =>
        {
            context.Response.ContentLength = 1_000_000;
            await context.Response.Body.WriteAsync(Encoding.ASCII.GetBytes("partial"));
            await context.Response.Body.FlushAsync();
            context.Abort();
        });
    });

    [Theory]
    [InlineData("/abort")]
    [InlineData("/abort-mid-body")]
    public async Task AbortResetsTheConnectionOnce(string path)
    {
        var syscalls = new FaultInjectingSyscalls();
        await using SpliceTestHost host = await StartAsync(syscalls);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            // A normal response first: the reset belongs to the abort, not to the connection's start.
            await connection.SendAsync(RawHttpConnection.Get("/plaintext"));
            Assert.Equal("Hello, World!", (await connection.ReadResponseAsync().WaitAsync(Waits.Short)).BodyText);
            Assert.Equal(0, Assert.Single(syscalls.Sockets).ResetOnCloseCalls);

            await connection.SendAsync(RawHttpConnection.Get(path));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            Assert.Equal(SocketError.ConnectionReset, error);
            // Whatever arrived before the reset is a prefix of what the handler wrote; never more.
            string text = Encoding.ASCII.GetString(bytes);
            int bodyStart = FaultKit.EndOfHead(bytes);
            string body = bodyStart < 0 ? "" : text[bodyStart..];
            bool prefixOfWhatWasWritten = path == "/abort-mid-body"
                && text.StartsWith("HTTP/1.1 200 OK", StringComparison.Ordinal)
                && "partial".StartsWith(body, StringComparison.Ordinal);
            Assert.True(bytes.Length == 0 || prefixOfWhatWasWritten, $"Unexpected bytes before the reset: '{text}'");
        }
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        FaultInjectingSyscalls.SocketLog socket = Assert.Single(syscalls.Sockets);
        Assert.Equal(1, socket.ResetOnCloseCalls);
        // No shutdown(2) before the reset: it would send a FIN first, and the client would see a clean end.
        Assert.Equal(0, socket.ShutdownWriteCalls);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task ConnectionCloseEndsWithAFinAndNoReset()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using SpliceTestHost host = await StartAsync(syscalls);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/plaintext", "Connection: close\r\n"));
            // The client keeps its end open: the end of stream it reads is the server's FIN, not a reset.
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            Assert.Null(error);
            string text = Encoding.ASCII.GetString(bytes);
            Assert.StartsWith("HTTP/1.1 200 OK", text);
            Assert.Contains("Connection: close", text, StringComparison.OrdinalIgnoreCase);
            // Chunked (the handler set no length): the whole body and the last chunk arrived before the FIN.
            Assert.True(text.EndsWith("\r\n\r\nd\r\nHello, World!\r\n0\r\n\r\n", StringComparison.Ordinal), $"Not the whole response: {text}");
            Assert.Equal(0, Assert.Single(syscalls.Sockets).ResetOnCloseCalls);
        }
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        FaultInjectingSyscalls.SocketLog socket = Assert.Single(syscalls.Sockets);
        Assert.Equal(0, socket.ResetOnCloseCalls);
        Assert.True(socket.ShutdownWriteCalls >= 1, "The server closed without shutdown(2): no FIN was sent on purpose.");
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task AnAbortWithoutAReasonIsKestrelsGracefulCloseAndSendsAFin()
    {
        // Kestrel ends a connection whose client has closed its side with Abort(null): its way of saying "closed
        // gracefully" (unless FinOnError is set), which Kestrel's socket transport answers with a FIN. Made here
        // deterministic with a connection middleware's handle on the connection, aborted the same way once the client
        // has its response; a reset (as this transport sent before) is an error to every such client.
        var syscalls = new FaultInjectingSyscalls();
        var accepted = new TaskCompletionSource<ConnectionContext>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using SpliceTestHost host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/plaintext", () => "Hello, World!"),
            options => options.Syscalls = syscalls,
            builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen => listen.Use(next => connection =>
            {
                accepted.TrySetResult(connection);
                return next(connection);
            }))));
        await using (RawHttpConnection client = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await client.SendAsync(RawHttpConnection.Get("/plaintext"));
            Assert.Equal("Hello, World!", (await client.ReadResponseAsync()).BodyText);
            (await accepted.Task.WaitAsync(Waits.Short)).Abort(null!);
            (byte[] rest, SocketError? error) = await FaultKit.ReadUntilClosedAsync(client.Socket, Waits.Short);
            Assert.Empty(rest);
            Assert.Null(error); // The server's FIN; a reset would be ConnectionReset.
        }
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        Assert.Equal(0, Assert.Single(syscalls.Sockets).ResetOnCloseCalls);
        host.Logs.AssertNoErrors();
    }
}
