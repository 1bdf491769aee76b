using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>Apps that set socket options through IConnectionSocketFeature keep working, and the connection survives it.</summary>
public class SocketFeatureTests
{
    [Fact]
    public async Task SocketOptionsCanBeReadAndSetWithoutDisturbingTheConnection()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/socket", (HttpContext context) =>
        {
            Socket socket = context.Features.Get<IConnectionSocketFeature>()!.Socket;
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
            bool keepAlive = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive)! != 0;
            return $"{socket.AddressFamily} {socket.NoDelay} {keepAlive} {socket.LocalEndPoint}";
        }));
        using var client = host.CreateClient();

        for (int i = 0; i < 3; i++)
        {
            using var response = await client.GetAsync("/socket");
            TransportAssert.ServedBySplice(response);
            Assert.Equal($"InterNetwork True True 127.0.0.1:{host.Port}", await response.Content.ReadAsStringAsync());
        }
        // Same connection each time: reading and setting options did not break or block it.
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
