using System.IO.Pipelines;
using SpliceTransport.Http;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Transport;

namespace SpliceTransport.Tests.Unit;

/// <summary>Small engine pieces on their own: descriptors, file opening, the ordered output queue.</summary>
public class EnginePieceTests
{
    [Fact]
    public void DescriptorZeroIsAValidDescriptor()
    {
        // A service manager may hand a socket over as fd 0; only -1 means "no descriptor".
        using var zero = new FileDescriptorHandle(0, ownsHandle: false);
        Assert.False(zero.IsInvalid);
        using var none = new FileDescriptorHandle(-1, ownsHandle: false);
        Assert.True(none.IsInvalid);
    }

    [Fact]
    public void FilesAreOpenedBlockingSoThatEagainCanOnlyBeTheSockets()
    {
        using var files = new TestFiles();
        string path = files.Create("blocking.bin", 100);
        using var cache = new OpenFileCache(capacity: 0, OpenFileCache.DefaultInactive);
        CachedFile? file = FileOpener.Open(cache, path, 0, null, out long length, out string? reason);
        Assert.NotNull(file);
        Assert.Null(reason);
        Assert.Equal(100, length);
        using FileDescriptorHandle handle = file.Handle;
        int flags = LibC.fcntl(handle, LibC.F_GETFL, 0);
        Assert.True(flags >= 0);
        Assert.Equal(0, flags & LibC.O_NONBLOCK);
    }

    [Fact]
    public async Task FilesAreQueuedAtTheirPipePositionInOrder()
    {
        var pipe = new Pipe();
        var writer = new SpliceOutputWriter(pipe.Writer, pipe.Reader);
        using var files = new TestFiles();
        using var handle = File.OpenHandle(files.Create("ordered.bin", 10));

        await writer.WriteAsync("headers-1"u8.ToArray());
        FileSegment first = writer.EnqueueFile(handle, "ordered.bin", offset: 0, count: 10);
        writer.Advance(10); // Kestrel counts the file's bytes through the writer; they are swallowed.
        // Written, not flushed through the writer: its flush would wait for the first file to be sent.
        Assert.Equal(0, writer.BytesToSwallow);
        "headers-2"u8.CopyTo(writer.GetSpan(9));
        writer.Advance(9);
        FileSegment second = writer.EnqueueFile(handle, "ordered.bin", offset: 2, count: 5);
        writer.Advance(5);

        // The pipe holds only the bytes written, and each file sits at the position of the bytes before it.
        Assert.Equal(9, first.Position);
        Assert.Equal(18, second.Position);
        Assert.Same(first, writer.PeekFile());
        writer.DequeueFile();
        Assert.Same(second, writer.PeekFile());
        await pipe.Writer.FlushAsync();
        ReadResult read = await pipe.Reader.ReadAsync();
        Assert.Equal("headers-1headers-2", System.Text.Encoding.ASCII.GetString(System.Buffers.BuffersExtensions.ToArray(read.Buffer)));

        // When the pump stops, what is queued, and whatever is queued later, completes as not sent.
        writer.StopFiles();
        Assert.False(await second.Completion);
        Assert.False(await writer.EnqueueFile(handle, "ordered.bin", 0, 1).Completion);
    }
}
