using System.Net;
using System.Net.Sockets;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Stopping the host with connections open: Kestrel stops accepting, closes idle keep-alive connections, and
/// lets requests in flight finish, all through our listener's unbind and our connections' close paths.
/// </summary>
public class GracefulShutdownTests
{
    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task InFlightRequestsCompleteIdleConnectionsCloseNewConnectionsAreRefused(int threadCount)
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await SpliceTestHost.StartAsync(
            app =>
            {
                app.MapGet("/fast", () => "fast");
                app.MapGet("/slow", async context =>
                {
                    entered.TrySetResult();
                    await release.Task;
                    // Written after shutdown started: the response must still reach the client in full.
                    await context.Response.WriteAsync(new string('s', 100_000));
                });
            },
            o => o.ThreadCount = threadCount);
        int port = host.Port;

        // An idle keep-alive connection: one request answered, then nothing.
        using var idle = await RawHttpConnection.ConnectAsync(port);
        await idle.SendAsync("GET /fast HTTP/1.1\r\nHost: localhost\r\n\r\n");
        RawHttpResponse fast = await idle.ReadResponseAsync();
        Assert.Equal("fast", fast.BodyText);
        fast.AssertServedBySplice();

        // A request in flight on another connection.
        using var client = host.CreateClient();
        Task<HttpResponseMessage> slow = client.GetAsync("/slow");
        await entered.Task.WaitAsync(ShutdownTimeout);

        Task stopping = host.App.StopAsync(new CancellationTokenSource(ShutdownTimeout).Token);

        // Kestrel unbinds first: new connections are refused while the old ones drain.
        await WaitUntilRefusedAsync(port);
        // The idle connection is closed without waiting for the request in flight.
        Assert.True(await idle.WaitForCloseAsync(ShutdownTimeout), "The idle keep-alive connection was not closed by the shutdown.");
        // Stopping waits for the request in flight (Kestrel waits until its connection closes).
        Assert.False(stopping.IsCompleted, "The host stopped before the request in flight completed.");

        release.SetResult();
        using HttpResponseMessage response = await slow.WaitAsync(ShutdownTimeout);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(new string('s', 100_000), await response.Content.ReadAsStringAsync());

        await stopping.WaitAsync(ShutdownTimeout);
        await AssertRefusedAsync(port);
        // At least the two connections above (a probe may have been accepted just before the unbind).
        Assert.True(host.Metrics.AcceptedConnections >= 2);
        Assert.Equal(0, host.Metrics.ActiveConnections);
        host.Logs.AssertNoErrors();
    }

    private static async Task WaitUntilRefusedAsync(int port)
    {
        using var timeout = new CancellationTokenSource(ShutdownTimeout);
        while (true)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), timeout.Token);
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionRefused)
            {
                return;
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
            {
                // Queued in the backlog (or accepted, not yet taken by Kestrel) as the listener closed: reset,
                // as on Kestrel's socket transport. Not yet "refused": try again.
            }
            // Accepted just before the unbind: it is closed as part of the shutdown, so just retry.
            await Task.Delay(20, timeout.Token);
        }
    }

    private static async Task AssertRefusedAsync(int port)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var ex = await Assert.ThrowsAsync<SocketException>(() => socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(ShutdownTimeout));
        Assert.Equal(SocketError.ConnectionRefused, ex.SocketErrorCode);
    }
}
