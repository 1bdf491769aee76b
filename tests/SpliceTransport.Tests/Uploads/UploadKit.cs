using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Uploads;

/// <summary>
/// A real Kestrel whose app saves request bodies with SaveBodyToFileAsync: <c>PUT /upload/{name}</c> into the
/// host's folder (the path form, with its temporary file and rename), <c>PUT /gunzip/{name}</c> the same through a
/// decompressing Request.Body, <c>PUT /peeked/{name}</c> after a read of the body, <c>PUT /nofolder/{name}</c> into a folder that does not exist,
/// <c>PUT /relength/{name}</c> with a Content-Length header changed by the app, <c>PUT /cancellable/{name}</c> with
/// <see cref="Cancel"/>'s token, and <c>PUT /device?path=…[&amp;mode=Append][&amp;appendFlag=true]</c> into a file the app opens itself (the handle form). Each answers "length zeroCopy reason splicedBytes"; a failure is kept in
/// <see cref="Failures"/> and rethrown, so that Kestrel answers it as it would for any app.
/// </summary>
internal sealed class UploadHost : IAsyncDisposable
{
    private UploadHost(SpliceTestHost host, TestFiles folder)
    {
        Host = host;
        Folder = folder;
    }

    public SpliceTestHost Host { get; }

    public TestFiles Folder { get; }

    public ConcurrentQueue<Exception> Failures { get; } = new();

    /// <summary>The token of <c>PUT /cancellable/{name}</c>'s save: a test cancels the upload with it.</summary>
    public CancellationTokenSource Cancel { get; } = new();

    /// <summary>Completes with the first failure the app saw.</summary>
    public TaskCompletionSource<Exception> FirstFailure { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when an upload request reaches the app, before it reads the body.</summary>
    public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static async Task<UploadHost> StartAsync(bool useSplice = true, Action<KestrelServerLimits>? limits = null, string[]? urls = null,
        Action<WebApplicationBuilder>? configureBuilder = null, Action<SpliceTransportOptions>? configureTransport = null)
    {
        var folder = new TestFiles();
        UploadHost? self = null;
        SpliceTestHost host;
        try
        {
            host = await SpliceTestHost.StartAsync(
                app =>
                {
                    app.MapPut("/upload/{name}", (HttpContext context, string name) =>
                        self!.SaveAsync(context, () => context.Request.SaveBodyToFileAsync(Path.Combine(folder.Root, name), flushToDisk: true, context.RequestAborted)));
                    app.MapPut("/device", (HttpContext context, string path, FileMode? mode, bool? appendFlag) => self!.SaveAsync(context, async () =>
                    {
                        using var file = File.OpenHandle(path, mode ?? FileMode.Open, FileAccess.Write);
                        if (appendFlag == true)
                        {
                            // O_APPEND on the descriptor itself (.NET's FileMode.Append does not set it): every write
                            // appends, and splice(2) into it says EINVAL.
                            Assert.Equal(0, SpliceTransport.Interop.LibC.fcntl(file, SpliceTransport.Interop.LibC.F_SETFL, SpliceTransport.Interop.LibC.O_APPEND));
                        }
                        return await context.Request.SaveBodyToFileAsync(file, context.RequestAborted);
                    }));
                    app.MapPut("/peeked/{name}", async (HttpContext context, string name) =>
                    {
                        // Something reads the body first: the bytes it took cannot be counted by a splice.
                        System.IO.Pipelines.ReadResult peek = await context.Request.BodyReader.ReadAsync();
                        context.Request.BodyReader.AdvanceTo(peek.Buffer.Start);
                        await self!.SaveAsync(context, () => context.Request.SaveBodyToFileAsync(Path.Combine(folder.Root, name), flushToDisk: false, context.RequestAborted));
                    });
                    app.MapPut("/nofolder/{name}", (HttpContext context, string name) =>
                        self!.SaveAsync(context, () => context.Request.SaveBodyToFileAsync(Path.Combine(folder.Root, "missing", name), flushToDisk: false, context.RequestAborted)));
                    app.MapPut("/relength/{name}", (HttpContext context, string name) =>
                    {
                        // A middleware that changes the announced length: Kestrel still frames the body by the original.
                        context.Request.ContentLength += 1000;
                        return self!.SaveAsync(context, () => context.Request.SaveBodyToFileAsync(Path.Combine(folder.Root, name), flushToDisk: false, context.RequestAborted));
                    });
                    app.MapPut("/cancellable/{name}", (HttpContext context, string name) =>
                        self!.SaveAsync(context, () => context.Request.SaveBodyToFileAsync(Path.Combine(folder.Root, name), flushToDisk: false, self.Cancel.Token)));
                    app.MapPut("/gunzip/{name}", (HttpContext context, string name) =>
                    {
                        // A body wrapper, as request decompression installs one: what is saved is what it reads.
                        context.Request.Body = new System.IO.Compression.GZipStream(context.Request.Body, System.IO.Compression.CompressionMode.Decompress);
                        return self!.SaveAsync(context, () => context.Request.SaveBodyToFileAsync(Path.Combine(folder.Root, name), flushToDisk: false, context.RequestAborted));
                    });
                    app.MapGet("/after", () => "after");
                },
                configureBuilder: builder =>
                {
                    builder.WebHost.ConfigureKestrel(kestrel => limits?.Invoke(kestrel.Limits));
                    configureBuilder?.Invoke(builder);
                },
                urls: urls,
                useSplice: useSplice,
                configureTransport: configureTransport);
        }
        catch
        {
            folder.Dispose();
            throw;
        }
        self = new UploadHost(host, folder);
        return self;
    }

    private async Task SaveAsync(HttpContext context, Func<Task<UploadResult>> save)
    {
        Started.TrySetResult();
        UploadResult result;
        try
        {
            result = await save();
        }
        catch (Exception ex)
        {
            Failures.Enqueue(ex);
            FirstFailure.TrySetResult(ex);
            throw;
        }
        context.Response.StatusCode = StatusCodes.Status201Created;
        await context.Response.WriteAsync(string.Create(CultureInfo.InvariantCulture, $"{result.BytesWritten} {result.ZeroCopy} {result.FallbackReason} {result.SplicedBytes}"));
    }

    public string PathOf(string name) => Path.Combine(Folder.Root, name);

    /// <summary>Every entry of the folder (the temporary files are hidden dot files: they are listed too).</summary>
    public string[] Entries() => Directory.GetFileSystemEntries(Folder.Root).Select(Path.GetFileName).ToArray()!;

    /// <summary>Descriptors of this process open on something in the upload folder.</summary>
    public string[] OpenDescriptorsInFolder() =>
        Directory.GetFiles("/proc/self/fd")
            .Select(fd => { try { return new FileInfo(fd).LinkTarget; } catch (IOException) { return null; } })
            .Where(target => target is not null && target.StartsWith(Folder.Root, StringComparison.Ordinal))
            .ToArray()!;

    /// <summary>
    /// After a failed upload: the folder holds exactly <paramref name="kept"/> (none when null), with its old content
    /// <paramref name="previous"/>; no descriptor is open in it; and no pipe is in use beyond the pool's idle ones.
    /// </summary>
    public void AssertNothingLeft(string? kept = null, string? previous = null, FaultInjectingSyscalls? syscalls = null)
    {
        Assert.Equal(kept is null ? [] : [kept], Entries());
        if (kept is not null && previous is not null)
        {
            Assert.Equal(previous, File.ReadAllText(PathOf(kept)));
        }
        Assert.Empty(OpenDescriptorsInFolder());
        if (syscalls is not null)
        {
            Assert.InRange(syscalls.OpenPipes(), 0, SpliceTransport.Splice.PipePool.DefaultMaxPooled);
        }
    }

    public long Fallbacks(string reason) => Host.Metrics.Total("splice.upload.fallbacks", "splice.upload.fallback.reason", reason);

    public async ValueTask DisposeAsync()
    {
        Cancel.Dispose();
        await Host.DisposeAsync();
        Folder.Dispose();
    }
}

/// <summary>What the upload host answered: "length zeroCopy reason splicedBytes" (reason empty when null).</summary>
internal readonly record struct UploadOutcome(long BytesWritten, bool ZeroCopy, string? Reason, long SplicedBytes)
{
    public static UploadOutcome Parse(string answer)
    {
        string[] fields = answer.Split(' ');
        Assert.True(fields.Length == 4, $"Not an upload answer: '{answer}'");
        return new UploadOutcome(long.Parse(fields[0], CultureInfo.InvariantCulture), bool.Parse(fields[1]),
            fields[2].Length == 0 ? null : fields[2], long.Parse(fields[3], CultureInfo.InvariantCulture));
    }
}

internal static class UploadBodies
{
    /// <summary><paramref name="size"/> random bytes.</summary>
    public static byte[] Random(int size)
    {
        byte[] bytes = new byte[size];
        RandomNumberGenerator.Fill(bytes);
        return bytes;
    }

    /// <summary>The head of a PUT with a Content-Length and <paramref name="extraHeaders"/> (full lines).</summary>
    public static string PutHead(string path, long contentLength, string? extraHeaders = null) =>
        $"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {contentLength}\r\n{extraHeaders}\r\n";
}
