using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Many zero-copy downloads at once, of different files and ranges, over many connections and both event
/// loops: each gets exactly its own bytes (the scratch memory and the queues are shared by nothing that reads).
/// Also HTTP/1.0, where the connection closes after the file.
/// </summary>
public class ConcurrencyTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const int Downloads = 24;

    private const long FileSize = 4 * 1024 * 1024 + 3;

    [Fact]
    public async Task ConcurrentDownloadsEachGetTheirOwnBytes()
    {
        string[] paths = Enumerable.Range(0, 4).Select(i => files.Get($"many/file{i}.bin", FileSize + i)).ToArray();
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true }));

        var tasks = Enumerable.Range(0, Downloads).Select(async i =>
        {
            using HttpClient client = host.CreateClient(); // A client each: its own connection.
            int index = i % paths.Length;
            using var request = new HttpRequestMessage(HttpMethod.Get, $"/many/file{index}.bin");
            long from = i * 1000;
            if (i % 2 == 1)
            {
                request.Headers.TryAddWithoutValidation("Range", $"bytes={from}-");
            }
            using HttpResponseMessage response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            await using Stream body = await response.Content.ReadAsStreamAsync();
            string sha = await TestFiles.Sha256Async(body);
            long start = i % 2 == 1 ? from : 0;
            Assert.True(TestFiles.Sha256(paths[index], start) == sha, $"Download {i} of file {index} from {start} has the wrong bytes.");
            return new FileInfo(paths[index]).Length - start;
        }).ToList();
        long[] sizes = await Task.WhenAll(tasks).WaitAsync(Waits.Response);

        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == Downloads, "every download is counted");
        await host.Metrics.AssertEventuallyAsync(sizes.Sum(), m => m.ZeroCopyBytes);
        Assert.Equal(Downloads, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task Http10GetsTheFileThenTheClose()
    {
        string path = files.Get("many/http10.bin", FileSize);
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true }));
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync("GET /many/http10.bin HTTP/1.0\r\n\r\n");
        RawHttpResponse response = await connection.ReadResponseAsync();
        Assert.Equal(200, response.StatusCode);
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(response.Body));
        Assert.Empty(await connection.ReadToEndAsync().WaitAsync(Waits.Short)); // Then the close, nothing more.
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
    }
}
