package Gateway::Client::SSE;

# A Server-Sent Events parser following the WHATWG event-stream algorithm (the one
# EventSource runs), checked by schemas/vectors/sse-frames.json.

use strict;
use warnings;

use Carp qw(croak);
use Encode qw(decode);

our $VERSION = '0.01';

sub new {
    my ($class, %args) = @_;
    my $on_event = delete $args{on_event};
    croak "unknown arguments: @{[ sort keys %args ]}" if %args;
    croak 'on_event must be a code reference' if defined $on_event && ref $on_event ne 'CODE';
    return bless {
        on_event      => $on_event,
        pending       => '',      # octets not yet ending in a line break
        data          => [],
        event         => '',
        last_event_id => '',
        dispatched_id => '',
        retry         => undef,
        started       => 0,       # whether the leading BOM check has happened
    }, $class;
}

sub last_event_id { $_[0]{last_event_id} }

# The last event id as of the last complete block (WHATWG's "last event ID string"): also
# set by a block with an id but no data, and never the id of a block cut off unfinished.
sub dispatched_id { $_[0]{dispatched_id} }

# The reconnection time the stream asked for (retry: field), in milliseconds, or undef.
sub retry { $_[0]{retry} }

# Feed octets as they arrive; returns the events completed by them (and calls on_event).
sub feed {
    my ($self, $octets) = @_;
    croak 'feed needs a string of octets' unless defined $octets;
    $self->{pending} .= $octets;
    $self->_strip_bom unless $self->{started};

    my @events;
    # Lines end in CRLF, LF or CR. A CR at the very end may be half of a CRLF: wait for more.
    while ($self->{pending} =~ s/\A([^\r\n]*)(?:\r\n|\n|\r(?=[^\n]))//) {
        my $event = $self->_line(decode('UTF-8', $1));
        next unless $event;
        push @events, $event;
        $self->{on_event}->($event) if $self->{on_event};
    }
    return @events;
}

sub _strip_bom {
    my ($self) = @_;
    return if length $self->{pending} < 3 && "\xEF\xBB\xBF" =~ /\A\Q$self->{pending}\E/;
    $self->{pending} =~ s/\A\xEF\xBB\xBF//;
    $self->{started} = 1;
}

sub _line {
    my ($self, $line) = @_;
    return $self->_dispatch if $line eq '';
    return if $line =~ /\A:/;    # a comment, such as a heartbeat

    my ($name, $value) = $line =~ /\A([^:]*)(?::[ ]?(.*))?\z/s;
    $value //= '';
    if ($name eq 'data') {
        push @{ $self->{data} }, $value;
    }
    elsif ($name eq 'event') {
        $self->{event} = $value;
    }
    elsif ($name eq 'id') {
        $self->{last_event_id} = $value unless $value =~ /\0/;
    }
    elsif ($name eq 'retry') {
        $self->{retry} = 0 + $value if $value =~ /\A[0-9]+\z/;
    }
    return;
}

sub _dispatch {
    my ($self) = @_;
    my ($data, $event) = ($self->{data}, $self->{event});
    ($self->{data}, $self->{event}) = ([], '');
    $self->{dispatched_id} = $self->{last_event_id};
    return unless @$data;
    return {
        id    => $self->{last_event_id},
        event => $event eq '' ? 'message' : $event,
        data  => join("\n", @$data),
    };
}

1;

__END__

=head1 NAME

Gateway::Client::SSE - a Server-Sent Events (text/event-stream) parser

=head1 SYNOPSIS

    use Gateway::Client::SSE;

    my $sse = Gateway::Client::SSE->new(on_event => sub {
        my ($event) = @_;    # { id => '3', event => 'progress', data => '{"done":1}' }
        print "$event->{event}: $event->{data}\n";
    });
    $sse->feed($chunk) while defined($chunk = read_some_octets());
    my $resume_from = $sse->last_event_id;

=head1 DESCRIPTION

A push parser for C<text/event-stream> bodies that follows the WHATWG event-stream
algorithm, the one browsers' C<EventSource> runs: lines end in CRLF, LF or CR; a line
starting with C<:> is a comment (heartbeats); C<data:> lines are joined with C<\n>; a
blank line dispatches the event; a block without data, and an unterminated block at the
end of the stream, produce nothing; C<id> carries over to later events.

It has no dependency on any HTTP library: feed it whatever your transport reads. It is
used by L<Gateway::Client/events> and L<Gateway::Client/subscribe>, and checked against the shared vectors in
C<schemas/vectors/sse-frames.json>.

=head1 METHODS

=head2 new(on_event => sub { ... })

C<on_event> (optional) is called with each event as it completes.

=head2 feed($octets)

Feeds raw octets (as read from the socket; fields are decoded from UTF-8 once their line
is complete, so a character split across chunks is fine). Returns the events completed
by this chunk, each a hashref C<< { id, event, data } >>: C<id> is the last event id
seen (C<""> if none), C<event> defaults to C<"message">, C<data> is a character string.

=head2 last_event_id

The last event id seen: what to send as C<Last-Event-ID> when reconnecting.

=head2 dispatched_id

The last event id as of the last complete block: unlike C<last_event_id>, also moved by a
block that has an C<id> but no data (which is no event), and never the id of a block cut
off before its blank line. What C<EventSource> itself resumes from.

=head2 retry

The reconnection delay the stream asked for with C<retry:>, in milliseconds, or undef.

=cut
