using System.Net.WebSockets;
using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>WebSockets (an upgraded HTTP/1.1 connection that Kestrel hands to the app as a raw stream).</summary>
public class WebSocketTests
{
    private const int MaxMessageSize = 2 * 1024 * 1024;

    [Fact]
    public async Task EchoesTextAndBinaryMessagesIncludingOneOfOneMegabyte()
    {
        await using var host = await SpliceTestHost.StartAsync(app =>
        {
            app.UseWebSockets();
            app.Map("/ws", async context =>
            {
                if (!context.WebSockets.IsWebSocketRequest)
                {
                    context.Response.StatusCode = StatusCodes.Status400BadRequest;
                    return;
                }
                using WebSocket socket = await context.WebSockets.AcceptWebSocketAsync();
                byte[] buffer = new byte[MaxMessageSize];
                while (true)
                {
                    int length = 0;
                    ValueWebSocketReceiveResult result;
                    do
                    {
                        result = await socket.ReceiveAsync(buffer.AsMemory(length), CancellationToken.None);
                        length += result.Count;
                    }
                    while (!result.EndOfMessage);
                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                        return;
                    }
                    await socket.SendAsync(buffer.AsMemory(0, length), result.MessageType, endOfMessage: true, CancellationToken.None);
                }
            });
        });

        using var client = new ClientWebSocket();
        client.Options.CollectHttpResponseDetails = true;
        await client.ConnectAsync(new Uri($"ws://127.0.0.1:{host.Port}/ws"), CancellationToken.None).WaitAsync(RawHttpConnection.Timeout);
        Assert.NotNull(client.HttpResponseHeaders);
        Assert.True(client.HttpResponseHeaders!.TryGetValue(SpliceTestHost.TransportHeader, out var transport));
        Assert.Equal("splice", Assert.Single(transport));

        var random = new Random(11);
        var messages = new List<(WebSocketMessageType Type, byte[] Data)>
        {
            (WebSocketMessageType.Text, Encoding.UTF8.GetBytes("hello")),
            (WebSocketMessageType.Binary, [42]),
            (WebSocketMessageType.Text, Encoding.UTF8.GetBytes(new string('x', 70_000))),
            (WebSocketMessageType.Binary, RandomBytes(random, 1024 * 1024)),
            (WebSocketMessageType.Binary, RandomBytes(random, 125)),
            // More large messages: each is one big write into the output pipe (hundreds of pool segments).
            (WebSocketMessageType.Binary, RandomBytes(random, 1024 * 1024)),
            (WebSocketMessageType.Binary, RandomBytes(random, 3 * 512 * 1024)),
        };
        byte[] receiveBuffer = new byte[MaxMessageSize];
        foreach ((WebSocketMessageType type, byte[] data) in messages)
        {
            await client.SendAsync(data, type, endOfMessage: true, CancellationToken.None).WaitAsync(RawHttpConnection.Timeout);
            int length = 0;
            ValueWebSocketReceiveResult result;
            do
            {
                result = await client.ReceiveAsync(receiveBuffer.AsMemory(length), CancellationToken.None).AsTask().WaitAsync(RawHttpConnection.Timeout);
                length += result.Count;
            }
            while (!result.EndOfMessage);
            Assert.Equal(type, result.MessageType);
            Assert.Equal(TestFiles.Sha256(data), TestFiles.Sha256(receiveBuffer.AsSpan(0, length)));
        }

        await client.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None).WaitAsync(RawHttpConnection.Timeout);
        Assert.Equal(WebSocketState.Closed, client.State);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    private static byte[] RandomBytes(Random random, int count)
    {
        byte[] bytes = new byte[count];
        random.NextBytes(bytes);
        return bytes;
    }
}
