#!/usr/bin/env perl
# A daemon's publish to a topic, in plain AnyEvent::RabbitMQ (no gateway code): each
# argument after the topic is one message's JSON body, published to the exchange
# gateway.topics with the topic as routing key, in confirm mode; prints "published N".
#
#   GATEWAY_BROKER_URL=amqp://... perl tests/perl/publish_topic.pl chat.room.7 '{"from":"p","text":"hi"}'

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../clients/perl/lib";

use AnyEvent;
use AnyEvent::RabbitMQ;
use Gateway::Worker;

my ($topic, @bodies) = @ARGV;
die "usage: $0 TOPIC JSON...\n" unless defined $topic && @bodies;
my %broker = %{ Gateway::Worker::parse_broker_url($ENV{GATEWAY_BROKER_URL}) };
my $done = AnyEvent->condvar;
my $rabbit = AnyEvent::RabbitMQ->new->load_xml_spec;
$rabbit->connect(
    %broker,
    timeout    => 10,
    on_failure => sub { $done->croak("cannot connect: @_") },
    on_success => sub {
        shift->open_channel(
            on_failure => sub { $done->croak("no channel: @_") },
            on_success => sub {
                my ($channel) = @_;
                $channel->confirm(on_success => sub {
                    my $left = @bodies;
                    for my $body (@bodies) {
                        $channel->publish(
                            exchange    => 'gateway.topics',
                            routing_key => $topic,
                            body        => $body,
                            header      => { content_type => 'application/json' },
                            on_ack      => sub { $done->send if --$left == 0 },
                            on_nack     => sub { $done->croak('nacked') },
                        );
                    }
                });
            },
        );
    },
);
$done->recv;
print "published ", scalar(@bodies), "\n";
