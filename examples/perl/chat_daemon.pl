#!/usr/bin/env perl
# A daemon "in the room" of the chat example (examples/chat/): it hears every message of
# every room (topic chat.room.<room>) straight from RabbitMQ, and answers "/upper some
# text" with {"from": "upper-bot", "text": "SOME TEXT"} in the same room. No gateway code:
# plain AMQP on the gateway's topic exchange, as docs/topics.md describes.
#
#   GATEWAY_BROKER_URL=amqp://guest:guest@127.0.0.1:5673/ perl examples/perl/chat_daemon.pl
#
# Its queue is exclusive, server-named and auto-deleted: the bot is in the room while it
# runs and leaves no queue behind when it stops. Messages said while it is down are not
# answered later (a stale "/UPPER" an hour on helps nobody), and each running copy of the
# daemon answers once. (A named durable queue would instead keep what is said while the
# bot is down, and share the work among copies of it, as competing consumers.)
#
# It prints "serving ..." on STDOUT once it consumes (again after each reconnection);
# logs go to STDERR.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../clients/perl/lib";

use AnyEvent;
use AnyEvent::RabbitMQ;
use IO::Handle;
use JSON::PP ();

use Gateway::Worker;               # for parse_broker_url
use Gateway::Worker::FieldTable;   # decodes every AMQP header type (see docs/workers.md)

my $EXCHANGE = 'gateway.topics';   # the gateway declares it (durable, type topic)
my $BINDING  = 'chat.room.#';      # every room
my $BOT      = 'upper-bot';
my $COMMAND  = '/upper ';
my $MAX_TEXT = 2000;               # schemas/topics/chat.room.json
my $RETRY_SECONDS = 0.5;
my $MAX_RECONNECT_SECONDS = 30;

my $JSON = JSON::PP->new->utf8->canonical;
my $broker = Gateway::Worker::parse_broker_url(
    $ENV{GATEWAY_BROKER_URL} || 'amqp://guest:guest@127.0.0.1:5673/'
);

sub say_log { print STDERR "chat-daemon: @_\n" }

my ($connection, $reconnect_timer, $stopping);
my $reconnect_delay = 1;

sub connect_broker {
    $connection = AnyEvent::RabbitMQ->new->load_xml_spec;
    $connection->connect(
        %$broker,
        timeout         => 10,
        tune            => { heartbeat => 30 },
        on_success      => \&open_channel,
        on_failure      => sub { lost("cannot connect to the broker: @_") },
        on_read_failure => sub { lost("broker connection failed: @_") },
        on_close        => sub { lost('the broker closed the connection') },
    );
}

sub lost {
    my ($why) = @_;
    return if $stopping || $reconnect_timer;
    say_log("$why; reconnecting in $reconnect_delay s");
    undef $connection;
    $reconnect_timer = AnyEvent->timer(after => $reconnect_delay, cb => sub {
        undef $reconnect_timer;
        connect_broker();
    });
    $reconnect_delay = $reconnect_delay * 2 > $MAX_RECONNECT_SECONDS ? $MAX_RECONNECT_SECONDS : $reconnect_delay * 2;
}

sub open_channel {
    my ($conn) = @_;
    my $failed = sub { say_log("cannot listen to the rooms: @_"); $conn->close };
    $conn->open_channel(on_failure => $failed, on_success => sub {
        my ($channel) = @_;
        # The gateway owns the exchange: declare it passively (a least-privilege broker
        # user may not declare it) and wait for a gateway to have declared it.
        $channel->declare_exchange(
            exchange   => $EXCHANGE,
            passive    => 1,
            on_failure => sub {
                say_log("exchange $EXCHANGE not declared yet (is the gateway up?)");
                my $timer; $timer = AnyEvent->timer(after => $RETRY_SECONDS, cb => sub {
                    undef $timer;
                    open_channel($conn) if $conn->is_open;
                });
            },
            on_success => sub { listen_to_rooms($conn, $channel, $failed) },
        );
    });
}

sub listen_to_rooms {
    my ($conn, $channel, $failed) = @_;
    # Replies are confirmed by RabbitMQ before the message they answer is acked.
    $channel->confirm(on_failure => $failed, on_success => sub {
        $channel->qos(prefetch_count => 16, on_failure => $failed, on_success => sub {
            $channel->declare_queue(exclusive => 1, auto_delete => 1, on_failure => $failed, on_success => sub {
                my $queue = shift->method_frame->queue;
                $channel->bind_queue(
                    queue => $queue, exchange => $EXCHANGE, routing_key => $BINDING,
                    on_failure => $failed,
                    on_success => sub {
                        $channel->consume(
                            queue      => $queue,
                            no_ack     => 0,
                            on_failure => $failed,
                            on_consume => sub { hear($channel, shift) },
                            on_success => sub {
                                $reconnect_delay = 1;
                                # The test harness (and people) wait for this line.
                                print STDOUT "serving $BINDING on $EXCHANGE as $BOT\n";
                                STDOUT->flush;
                            },
                        );
                    },
                );
            });
        });
    });
}

# One message said in a room: answer "/upper ..." unless it is malformed or our own.
sub hear {
    my ($channel, $delivery) = @_;
    my $tag  = $delivery->{deliver}->method_frame->delivery_tag;
    my $room = $delivery->{deliver}->method_frame->routing_key;
    my $ack  = sub { $channel->ack(delivery_tag => $tag) if $channel->is_open };
    my $body = $delivery->{body} ? $delivery->{body}->payload : '';

    my $reply = answer_to($body);
    return $ack->() unless defined $reply;
    $channel->publish(
        exchange    => $EXCHANGE,
        routing_key => $room,
        body        => $JSON->encode($reply),
        header      => { content_type => 'application/json', delivery_mode => 2 },
        on_ack      => $ack,
        on_nack     => sub {
            say_log("RabbitMQ refused the reply in $room");
            $ack->();
        },
    );
}

# The reply to a message body (bytes), or undef for none.
sub answer_to {
    my ($body) = @_;
    my $message = eval { $JSON->decode($body) };
    unless (ref $message eq 'HASH' && is_string($message->{from}) && is_string($message->{text})) {
        say_log('ignored a malformed message');
        return undef;
    }
    return undef if $message->{from} eq $BOT;     # never answer ourselves
    return undef unless index($message->{text}, $COMMAND) == 0;
    my $text = uc substr $message->{text}, length $COMMAND;
    $text = substr $text, 0, $MAX_TEXT;           # uc may lengthen it (ß -> SS)
    return undef unless $text =~ /\S/;            # "/upper " alone: nothing to say
    return { from => $BOT, text => $text };
}

# Whether a decoded JSON value was a string (not a number, boolean, null, array or object):
# it then encodes back as one.
sub is_string {
    my ($value) = @_;
    return defined $value && !ref $value && $JSON->encode([$value]) =~ /\A\["/;
}

local $| = 1;
my $stopped = AnyEvent->condvar;
my @signals = map {
    AnyEvent->signal(signal => $_, cb => sub {
        return if $stopping++;
        return $stopped->send unless $connection && $connection->is_open;
        my $grace = AnyEvent->timer(after => 5, cb => sub { $stopped->send });
        $connection->close(on_success => sub { undef $grace; $stopped->send },
                           on_failure => sub { undef $grace; $stopped->send });
    })
} qw(INT TERM);
connect_broker();
$stopped->recv;
