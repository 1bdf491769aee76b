using System.Buffers;
using System.Collections;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace SpliceTransport.Transport;

/// <summary>
/// The connection is its own feature collection, as Kestrel's transport connections are: the transport's
/// features are answered by type without a dictionary, and only features others add (Kestrel adds several)
/// go into one.
/// </summary>
internal sealed partial class SpliceConnection :
    IFeatureCollection,
    IConnectionIdFeature,
    IConnectionTransportFeature,
    IConnectionItemsFeature,
    IMemoryPoolFeature,
    IConnectionLifetimeFeature,
    IConnectionEndPointFeature,
    IConnectionSocketFeature,
    ISpliceConnectionFeature,
    IZeroCopyOutputFeature
{
    private Dictionary<Type, object>? _extraFeatures;
    private int _featureRevision;
    private System.Net.Sockets.Socket? _socketView;

    public override IFeatureCollection Features => this;

    public MemoryPool<byte> MemoryPool => _context.MemoryPool;

    public int EventLoopIndex => Loop.Index;

    /// <summary>
    /// A <see cref="System.Net.Sockets.Socket"/> over the connection's descriptor, for apps that set socket
    /// options. It does not own the descriptor (disposing it closes nothing), and it must not be used for
    /// I/O: the descriptor belongs to a SpliceTransport event loop, and a Socket's asynchronous operations
    /// would register it with the runtime's own epoll engine as well.
    /// </summary>
    public System.Net.Sockets.Socket Socket2
    {
        get
        {
            // Under the same lock as DisposeSocketView, so that no view is made of a descriptor already closed
            // (its number could belong to another file by then).
            lock (Readiness)
            {
                ObjectDisposedException.ThrowIf(State == ConnectionState.Closed, this);
                return _socketView ??= new System.Net.Sockets.Socket(new SafeSocketHandle(Socket.DangerousGetHandle(), ownsHandle: false));
            }
        }
    }

    /// <summary>Disposes the socket view before the descriptor closes, so that later use of it throws. Loop thread.</summary>
    private void DisposeSocketView()
    {
        lock (Readiness)
        {
            _socketView?.Dispose();
        }
    }

    System.Net.Sockets.Socket IConnectionSocketFeature.Socket => Socket2;

    bool IFeatureCollection.IsReadOnly => false;

    int IFeatureCollection.Revision => _featureRevision;

    object? IFeatureCollection.this[Type key]
    {
        get => GetFeature(key);
        set
        {
            _featureRevision++;
            if (value is null)
            {
                _extraFeatures?.Remove(key);
            }
            else
            {
                (_extraFeatures ??= new Dictionary<Type, object>())[key] = value;
            }
        }
    }

    private object? GetFeature(Type key)
    {
        // Features set by others win, so that Kestrel or middleware can replace one of ours.
        if (_extraFeatures is not null && _extraFeatures.TryGetValue(key, out object? extra))
        {
            return extra;
        }
        return Array.IndexOf(s_ownFeatures, key) >= 0 ? this : null;
    }

    TFeature? IFeatureCollection.Get<TFeature>() where TFeature : default => (TFeature?)GetFeature(typeof(TFeature));

    void IFeatureCollection.Set<TFeature>(TFeature? instance) where TFeature : default => ((IFeatureCollection)this)[typeof(TFeature)] = instance;

    IEnumerator<KeyValuePair<Type, object>> IEnumerable<KeyValuePair<Type, object>>.GetEnumerator()
    {
        foreach (Type type in s_ownFeatures)
        {
            if (_extraFeatures is null || !_extraFeatures.ContainsKey(type))
            {
                yield return new KeyValuePair<Type, object>(type, this);
            }
        }
        if (_extraFeatures is not null)
        {
            foreach (KeyValuePair<Type, object> pair in _extraFeatures)
            {
                yield return pair;
            }
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => ((IEnumerable<KeyValuePair<Type, object>>)this).GetEnumerator();

    private static readonly Type[] s_ownFeatures =
    [
        typeof(IConnectionIdFeature), typeof(IConnectionTransportFeature), typeof(IConnectionItemsFeature),
        typeof(IMemoryPoolFeature), typeof(IConnectionLifetimeFeature), typeof(IConnectionEndPointFeature),
        typeof(IConnectionSocketFeature), typeof(ISpliceConnectionFeature), typeof(IZeroCopyOutputFeature), typeof(ISocketHandoffFeature),
    ];
}
